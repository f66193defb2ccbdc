//! Certificates, keys and the admin kubeconfig, generated fresh for every control plane.
//!
//! One CA signs everything: the API server's serving certificate (127.0.0.1,
//! localhost and the in-cluster service names), the serving certificate shared by
//! kube-scheduler and kube-controller-manager, and the admin client certificate
//! (`O=system:masters`). The service-account signing key is a separate ECDSA key.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::Error;

/// File paths of the generated material, and the CA to issue more with.
#[derive(Debug, Clone)]
pub(crate) struct Pki {
    ca: std::sync::Arc<(CertificateParams, KeyPair)>,
    pub ca_cert: PathBuf,
    pub ca_pem: String,
    pub apiserver_cert: PathBuf,
    pub apiserver_key: PathBuf,
    pub component_cert: PathBuf,
    pub component_key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    pub service_account_key: PathBuf,
    pub service_account_pub: PathBuf,
}

/// Subject common name of the admin client certificate.
pub(crate) const ADMIN_USER: &str = "carbon-kube-testkit-admin";

impl Pki {
    /// Generates all material into `dir`.
    pub(crate) fn generate(dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;

        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.distinguished_name = name("carbon-kube-testkit-ca", None);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::from_params(&ca_params, &ca_key);

        let serving_names = [
            "127.0.0.1",
            "localhost",
            // First address of --service-cluster-ip-range: the `kubernetes` service.
            "10.0.0.1",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ];
        let (apiserver_pem, apiserver_key_pem) = leaf(
            &issuer,
            &serving_names,
            name("kube-apiserver", None),
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let (component_pem, component_key_pem) = leaf(
            &issuer,
            &["127.0.0.1", "localhost"],
            name("carbon-kube-testkit-components", None),
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let (admin_pem, admin_key_pem) = leaf(
            &issuer,
            &[],
            name(ADMIN_USER, Some("system:masters")),
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let sa_key = KeyPair::generate()?;
        drop(issuer);

        let write = |file: &str, contents: &str| -> Result<PathBuf, Error> {
            let path = dir.join(file);
            std::fs::write(&path, contents).map_err(|e| Error::io(&path, e))?;
            Ok(path)
        };
        let ca_pem = ca_cert.pem();
        Ok(Self {
            ca_cert: write("ca.crt", &ca_pem)?,
            apiserver_cert: write("apiserver.crt", &apiserver_pem)?,
            apiserver_key: write("apiserver.key", &apiserver_key_pem)?,
            component_cert: write("component.crt", &component_pem)?,
            component_key: write("component.key", &component_key_pem)?,
            admin_cert: write("admin.crt", &admin_pem)?,
            admin_key: write("admin.key", &admin_key_pem)?,
            service_account_key: write("sa.key", &sa_key.serialize_pem())?,
            service_account_pub: write("sa.pub", &sa_key.public_key_pem())?,
            ca_pem,
            ca: std::sync::Arc::new((ca_params, ca_key)),
        })
    }

    /// A new serving certificate for `names` (DNS names or IP addresses)
    /// signed by the CA: `(certificate PEM, private key PEM)`.
    pub(crate) fn issue_serving_certificate(
        &self,
        names: &[&str],
    ) -> Result<(String, String), Error> {
        let (params, key) = &*self.ca;
        let issuer = Issuer::from_params(params, key);
        let common_name = names.first().copied().unwrap_or("carbon-kube-testkit");
        leaf(
            &issuer,
            names,
            name(common_name, None),
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// Writes an admin kubeconfig for `server` (file paths, not inline data, so
    /// the file stays readable) to `path`.
    pub(crate) fn write_kubeconfig(&self, path: &Path, server: &str) -> Result<(), Error> {
        let quote = |p: &Path| serde_json::Value::from(p.display().to_string()).to_string();
        let contents = format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: carbon-kube-testkit\n  \
               cluster:\n    \
                 server: {server}\n    \
                 certificate-authority: {ca}\n\
             users:\n\
             - name: {ADMIN_USER}\n  \
               user:\n    \
                 client-certificate: {cert}\n    \
                 client-key: {key}\n\
             contexts:\n\
             - name: carbon-kube-testkit\n  \
               context:\n    \
                 cluster: carbon-kube-testkit\n    \
                 user: {ADMIN_USER}\n    \
                 namespace: default\n\
             current-context: carbon-kube-testkit\n",
            server = serde_json::Value::from(server),
            ca = quote(&self.ca_cert),
            cert = quote(&self.admin_cert),
            key = quote(&self.admin_key),
        );
        std::fs::write(path, contents).map_err(|e| Error::io(path, e))
    }
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}

/// A certificate signed by `issuer` and its private key, both PEM.
fn leaf(
    issuer: &Issuer<'_, &KeyPair>,
    subject_alt_names: &[&str],
    distinguished_name: DistinguishedName,
    usage: ExtendedKeyUsagePurpose,
) -> Result<(String, String), Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(
        subject_alt_names
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
    )?;
    params.distinguished_name = distinguished_name;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_readable_material_and_a_kubeconfig() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::generate(dir.path()).unwrap();
        assert!(pki.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let key = std::fs::read_to_string(&pki.service_account_key).unwrap();
        assert!(key.contains("PRIVATE KEY"), "{key}");
        let kubeconfig = dir.path().join("admin.kubeconfig");
        pki.write_kubeconfig(&kubeconfig, "https://127.0.0.1:6443")
            .unwrap();
        let parsed = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
        assert_eq!(parsed.clusters.len(), 1);
        let cluster = parsed.clusters[0].cluster.as_ref().unwrap();
        assert_eq!(cluster.server.as_deref(), Some("https://127.0.0.1:6443"));
    }

    #[test]
    fn issued_serving_certificates_chain_to_the_ca() {
        use rustls::client::WebPkiServerVerifier;
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

        crate::ensure_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::generate(dir.path()).unwrap();
        let (cert_pem, key_pem) = pki.issue_serving_certificate(&["127.0.0.1"]).unwrap();
        assert!(key_pem.contains("PRIVATE KEY"));

        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap())
            .unwrap();
        let verifier = WebPkiServerVerifier::builder(roots.into()).build().unwrap();
        let leaf = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let ip = ServerName::try_from("127.0.0.1").unwrap();
        verifier
            .verify_server_cert(&leaf, &[], &ip, &[], UnixTime::now())
            .unwrap();
        let other = ServerName::try_from("example.com").unwrap();
        assert!(
            verifier
                .verify_server_cert(&leaf, &[], &other, &[], UnixTime::now())
                .is_err()
        );
    }
}
