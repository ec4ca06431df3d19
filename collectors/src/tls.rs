//! The rustls plumbing both TLS sides share: the Vault client here and the web server of
//! the root crate (`http::web_config`). One crypto provider, chosen once, and one reading
//! of PEM certificates and keys. What each side says about a bad file stays with that
//! side: the client names the path, the server the config key.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The crypto every TLS config of the process is built with: ring, the only backend
/// compiled in (no process-wide default is installed, so each config names it).
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM text, in order. No certificate at all is
/// [`pem::Error::NoItemsFound`]: a file of only a key or of junk is a mistake.
pub fn pem_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, pem::Error> {
    let certs = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        return Err(pem::Error::NoItemsFound);
    }
    Ok(certs)
}

/// The first private key (PKCS#1, PKCS#8 or SEC1) in a PEM text.
pub fn pem_private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, pem::Error> {
    PrivateKeyDer::from_pem_slice(pem)
}

/// A PEM file's bytes; a read failure is [`pem::Error::Io`], so that a caller reports
/// "cannot open" and "not PEM" through one error.
pub fn read_pem_file(path: &Path) -> Result<Vec<u8>, pem::Error> {
    std::fs::read(path).map_err(pem::Error::Io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_without_a_certificate_is_no_items_found() {
        let err = pem_certificates(b"not a certificate\n").unwrap_err();
        assert!(matches!(err, pem::Error::NoItemsFound), "{err:?}");
    }

    #[test]
    fn a_missing_file_is_an_io_error() {
        let err = read_pem_file(Path::new("/nonexistent/ca.pem")).unwrap_err();
        assert!(matches!(err, pem::Error::Io(_)), "{err:?}");
    }
}
