//! Where Kubernetes TLS secrets come from. The model resolves Gateway and DestinationRule
//! `credentialName`s through a [`CredentialSource`] it is given, instead of reading the file
//! system itself: the CLI's `--credentials-dir` is [`CredentialsDir`] (the default), a test or a
//! control plane can inject another source.
//!
//! A secret is read as Istio reads one: keys `tls.crt`, `tls.key` and `ca.crt`. Envoy's config
//! names files, so a source answers with the path Envoy will read.

use std::path::{Path, PathBuf};

/// One key of a secret, as a source finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretFile {
    /// What the config names (an absolute path for the file-system source).
    pub path: String,
    /// Where the source looked, for the error when the file is missing.
    pub looked_at: String,
    /// Whether the file is there.
    pub present: bool,
}

/// A store of Kubernetes TLS secrets, by secret name.
pub trait CredentialSource {
    /// Key `key` (`tls.crt`, `tls.key`, `ca.crt`) of secret `secret`.
    fn secret_file(&self, secret: &str, key: &str) -> SecretFile;
    /// Where the files of `secret` belong, for the hint of a missing one.
    fn secret_location(&self, secret: &str) -> String;
}

/// The file-system source of `--credentials-dir DIR`: secret `NAME` is the folder `DIR/NAME`
/// holding one file per key (as `kubectl get secret NAME -o yaml` lists them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialsDir(pub PathBuf);

impl CredentialsDir {
    /// The source reading `dir`.
    pub fn new(dir: &Path) -> Self {
        Self(dir.to_path_buf())
    }
}

impl CredentialSource for CredentialsDir {
    fn secret_file(&self, secret: &str, key: &str) -> SecretFile {
        let path = self.0.join(secret).join(key);
        let present = path.is_file();
        let looked_at = path.display().to_string();
        // Envoy resolves a relative path against its own working directory, not sluice's.
        let absolute = std::path::absolute(&path).unwrap_or(path);
        SecretFile {
            path: absolute.display().to_string(),
            looked_at,
            present,
        }
    }

    fn secret_location(&self, secret: &str) -> String {
        self.0.join(secret).display().to_string()
    }
}
