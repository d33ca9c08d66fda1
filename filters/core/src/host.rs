//! The narrow port between the filters' logic and Envoy.
//!
//! The cdylibs implement [`RequestView`] over proxy-wasm host calls; tests use [`MockHost`].
//! Header values are bytes: Envoy accepts non-UTF-8 values, and nothing here may assume UTF-8.

use std::collections::BTreeMap;

/// Read access to the request being decided on. Implementations fetch lazily: a header that no
/// rule looks at is never read from the host.
pub trait RequestView {
    /// A request header by lower-case name (`:path`, `:authority`, `:method`, `end-user`, ...).
    /// Of a header sent on several lines, the first: all Envoy hands a filter by name.
    fn header(&self, name: &str) -> Option<Vec<u8>>;
    /// Every line of a header, in request order: a costlier read (Envoy serialises the whole
    /// header map), for the rare case the first line is not enough.
    fn header_lines(&self, name: &str) -> Vec<Vec<u8>>;
    /// The local port the request arrived on (Istio's `port` match), if known.
    fn local_port(&self) -> Option<u32>;
}

/// An in-memory request for unit tests of the logic.
#[derive(Debug, Clone, Default)]
pub struct MockHost {
    /// Request headers, keyed by lower-case name.
    pub headers: BTreeMap<String, Vec<u8>>,
    /// The local port, for `port` matches.
    pub port: Option<u32>,
    /// Further lines of headers already in `headers`, in order (`name`, value).
    pub repeated: Vec<(String, Vec<u8>)>,
}

impl MockHost {
    /// A request with the given pseudo-headers.
    pub fn request(method: &str, authority: &str, path: &str) -> Self {
        Self::default()
            .with(":method", method)
            .with(":authority", authority)
            .with(":path", path)
    }

    /// Adds a header (value given as text).
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.headers
            .insert(name.to_ascii_lowercase(), value.as_bytes().to_vec());
        self
    }

    /// Adds another line of a header already set with [`MockHost::with`] (a client repeating
    /// it, e.g. two `cookie` lines over HTTP/1.1).
    pub fn with_repeated(mut self, name: &str, value: &str) -> Self {
        self.repeated
            .push((name.to_ascii_lowercase(), value.as_bytes().to_vec()));
        self
    }

    /// Adds a header with raw bytes, e.g. a non-UTF-8 value.
    pub fn with_bytes(mut self, name: &str, value: &[u8]) -> Self {
        self.headers
            .insert(name.to_ascii_lowercase(), value.to_vec());
        self
    }
}

impl RequestView for MockHost {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        self.headers.get(name).cloned()
    }

    fn header_lines(&self, name: &str) -> Vec<Vec<u8>> {
        let rest = self.repeated.iter().filter(|(n, _)| n == name);
        self.header(name)
            .into_iter()
            .chain(rest.map(|(_, value)| value.clone()))
            .collect()
    }

    fn local_port(&self) -> Option<u32> {
        self.port
    }
}
