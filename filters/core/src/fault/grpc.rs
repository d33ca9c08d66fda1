//! gRPC status names (as Istio's `grpcStatus` accepts them) and Envoy's mappings between HTTP
//! and gRPC statuses, so an abort reads naturally to both kinds of client.

/// The canonical gRPC status names, indexed by code (grpc/doc/statuscodes.md). Istio's
/// `SupportedGRPCStatus` accepts exactly these.
pub const STATUS_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The code of a status name (`"UNAVAILABLE"` -> 14).
pub fn code_of(name: &str) -> Option<u8> {
    STATUS_NAMES
        .iter()
        .position(|known| *known == name)
        .and_then(|code| u8::try_from(code).ok())
}

/// The name of a code (14 -> `"UNAVAILABLE"`), `None` above 16.
pub fn name_of(code: u8) -> Option<&'static str> {
    STATUS_NAMES.get(usize::from(code)).copied()
}

/// The gRPC status Envoy gives a local reply with this HTTP status when the request is gRPC
/// (`Grpc::Utility::httpToGrpcStatus`, after grpc/doc/http-grpc-status-mapping.md).
pub fn from_http(status: u16) -> u8 {
    match status {
        400 => 13,                   // INTERNAL
        401 => 16,                   // UNAUTHENTICATED
        403 => 7,                    // PERMISSION_DENIED
        404 => 12,                   // UNIMPLEMENTED
        429 | 502 | 503 | 504 => 14, // UNAVAILABLE
        _ => 2,                      // UNKNOWN
    }
}

/// The HTTP status matching a gRPC code (Envoy's `Grpc::Utility::grpcToHttpStatus`), for a
/// gRPC abort that hits a plain HTTP request.
pub fn to_http(code: u8) -> u16 {
    match code {
        0 => 200,
        1 => 499,
        3 | 9 | 11 => 400,
        4 => 504,
        5 => 404,
        6 | 10 => 409,
        7 => 403,
        8 => 429,
        12 => 501,
        14 => 503,
        16 => 401,
        // UNKNOWN, INTERNAL, DATA_LOSS and anything unknown.
        _ => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for code in 0..=16u8 {
            let name = name_of(code).unwrap();
            assert_eq!(code_of(name), Some(code));
        }
        assert_eq!(code_of("UNAVAILABLE"), Some(14));
        assert_eq!(code_of("unavailable"), None);
        assert_eq!(code_of("14"), None);
        assert_eq!(name_of(17), None);
    }

    #[test]
    fn maps_like_envoy() {
        assert_eq!(from_http(503), 14);
        assert_eq!(from_http(404), 12);
        assert_eq!(from_http(500), 2);
        assert_eq!(to_http(14), 503);
        assert_eq!(to_http(5), 404);
        assert_eq!(to_http(13), 500);
    }
}
