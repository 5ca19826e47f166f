//! The caller's credentials, carried as field 100 of any request message
//! (`proto::WithCredentials`): appended by the client to the encoded request, read by the
//! server apart from the request's own fields (which skip it as unknown).

use bytes::{Bytes, BytesMut};
use prost::Message;

/// Most supplementary groups a request may carry (Linux NGROUPS_MAX).
pub const MAX_GROUPS: usize = 65536;

/// `msg` (an encoded request) with `credentials` appended.
pub fn attach(msg: Bytes, credentials: &proto::Credentials) -> Bytes {
    let extra = proto::WithCredentials {
        credentials: Some(credentials.clone()),
    };
    let mut out = BytesMut::with_capacity(msg.len() + extra.encoded_len());
    out.extend_from_slice(&msg);
    extra
        .encode(&mut out)
        .expect("BytesMut grows to fit the message");
    out.freeze()
}

/// The credentials an encoded request carries, if any. Errors name what is malformed.
pub fn of(msg: &[u8]) -> Result<Option<proto::Credentials>, String> {
    let with = proto::WithCredentials::decode(msg).map_err(|e| e.to_string())?;
    match with.credentials {
        Some(c) if c.groups.len() > MAX_GROUPS => Err(format!(
            "{} supplementary groups (at most {MAX_GROUPS})",
            c.groups.len()
        )),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_keeps_its_fields_and_carries_the_credentials_beside_them() {
        let req = proto::OpenRequest {
            path: "a/b".into(),
            flags: 2,
            handle: 7,
            ..Default::default()
        };
        let creds = proto::Credentials {
            uid: 1000,
            gid: 100,
            groups: vec![100, 27, 4],
        };
        let wire = attach(req.encode_to_vec().into(), &creds);
        assert_eq!(proto::OpenRequest::decode(wire.clone()).unwrap(), req);
        assert_eq!(of(&wire).unwrap(), Some(creds));
        assert_eq!(of(&req.encode_to_vec()).unwrap(), None);
    }

    #[test]
    fn too_many_groups_are_refused() {
        let creds = proto::Credentials {
            uid: 1,
            gid: 1,
            groups: vec![5; MAX_GROUPS + 1],
        };
        let wire = attach(Bytes::new(), &creds);
        assert!(of(&wire).unwrap_err().contains("supplementary groups"));
    }
}
