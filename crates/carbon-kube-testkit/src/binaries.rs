//! Where the Kubernetes binaries built by `make k8s-bin` live.

use std::path::{Path, PathBuf};

use crate::Error;

/// Kubernetes version the binaries are built for (see `test/k8s/build.sh`).
pub const KUBERNETES_VERSION: &str = "v1.37.2";

/// Environment variable overriding the binary directory.
pub const BIN_DIR_ENV: &str = "CARBON_KUBE_K8S_BIN";

/// The binaries of one control plane: resolved paths, each checked to exist.
#[derive(Debug, Clone)]
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// Binary directory: `$CARBON_KUBE_K8S_BIN`, or
    /// `$HOME/.cache/carbon-kube/k8s/v1.37.2/bin` (where `make k8s-bin` puts them).
    pub fn default_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os(BIN_DIR_ENV).filter(|d| !d.is_empty()) {
            return PathBuf::from(dir);
        }
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from);
        home.join(".cache/carbon-kube/k8s")
            .join(KUBERNETES_VERSION)
            .join("bin")
    }

    /// Binaries in [`Binaries::default_dir`].
    pub fn locate() -> Self {
        Self::in_dir(Self::default_dir())
    }

    /// Binaries in the given directory.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory holding the binaries.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of `name` in the directory, or [`Error::MissingBinary`] telling the
    /// reader to run `make k8s-bin`.
    pub fn path(&self, name: &'static str) -> Result<PathBuf, Error> {
        let path = self.dir.join(name);
        if path.is_file() {
            Ok(path)
        } else {
            Err(Error::MissingBinary { binary: name, path })
        }
    }

    /// Fails early, before anything is started, if any of `names` is missing.
    pub fn require(&self, names: &[&'static str]) -> Result<(), Error> {
        names.iter().try_for_each(|name| self.path(name).map(drop))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_says_to_run_make_k8s_bin() {
        let bins = Binaries::in_dir("/nonexistent/carbon-kube-bin");
        let err = bins.path("kube-apiserver").unwrap_err();
        let message = err.to_string();
        assert!(message.contains("make k8s-bin"), "{message}");
        assert!(
            message.contains("/nonexistent/carbon-kube-bin/kube-apiserver"),
            "{message}"
        );
        assert!(bins.require(&["etcd", "kwok"]).is_err());
    }
}
