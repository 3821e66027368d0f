//! Names for services created without one: like Docker (whose daemon names
//! an unnamed service before SwarmKit sees it), `adjective_surname`, from
//! shoal's own short lists (coastal adjectives, and people of the sea and of
//! computing).

use rand::seq::SliceRandom;
use rand::Rng;

const ADJECTIVES: &[&str] = &[
    "agile", "amber", "azure", "bold", "briny", "brisk", "calm", "clever", "coral", "deep", "eager", "foamy", "gentle",
    "glassy", "golden", "hardy", "hushed", "keen", "lively", "lucid", "mellow", "misty", "nimble", "placid", "plucky",
    "quiet", "rapid", "salty", "sandy", "serene", "shiny", "silver", "sleek", "steady", "sunny", "swift", "tidal",
    "vivid", "wavy", "windy",
];

const SURNAMES: &[&str] = &[
    "ballard", "beebe", "bascom", "carson", "cousteau", "darwin", "earle", "ekman", "forel", "gagnan", "hass",
    "heezen", "hopper", "humboldt", "kamen", "knuth", "lamport", "liskov", "lovelace", "maury", "munk", "nansen",
    "piccard", "revelle", "ritchie", "ross", "sargent", "shannon", "stommel", "sverdrup", "tharp", "thompson",
    "turing", "vaughan", "walsh", "wirth", "wyville", "yentsch", "zobell", "zuse",
];

/// A random `adjective_surname`, always a valid service name.
pub fn random_name(rng: &mut impl Rng) -> String {
    let adjective = ADJECTIVES.choose(rng).copied().unwrap_or("calm");
    let surname = SURNAMES.choose(rng).copied().unwrap_or("tharp");
    format!("{adjective}_{surname}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_adjective_underscore_surname_and_vary() {
        let mut rng = rand::thread_rng();
        let names: std::collections::BTreeSet<String> = (0..200).map(|_| random_name(&mut rng)).collect();
        assert!(names.len() > 50, "{names:?}");
        for n in &names {
            let (a, s) = n.split_once('_').unwrap();
            assert!(ADJECTIVES.contains(&a) && SURNAMES.contains(&s), "{n}");
            assert!(n.len() <= 63 && n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
    }
}
