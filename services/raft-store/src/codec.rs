//! The replica's own binary encoding: MessagePack (with field names, so
//! optional fields may be absent) for log entries, state machine values,
//! snapshots and Raft RPCs. JSON stays on the store API, where other
//! processes and people read it; inside the replica it was most of the CPU.

use serde::de::DeserializeOwned;
use serde::Serialize;

pub type DecodeError = rmp_serde::decode::Error;

pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Our types always encode (no non-string map keys, no failing Serialize impls).
    rmp_serde::to_vec_named(value).expect("replica values encode as MessagePack")
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    rmp_serde::from_slice(bytes)
}

#[cfg(test)]
mod tests {
    use shoal_shared::store::Record;

    #[test]
    fn records_with_json_bodies_round_trip() {
        let mut r = Record::blob(
            "x",
            serde_json::json!({"Spec": {"Name": "a", "N": [1, 2.5, null, true]}}),
        );
        r.labels.insert("k".into(), "v".into());
        let back: Record = super::decode(&super::encode(&r)).unwrap();
        assert_eq!(back, r);
    }
}
