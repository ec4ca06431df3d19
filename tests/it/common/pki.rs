//! Test certificates, made with the openssl CLI (EC P-256, valid for two days).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl CLI is needed to make test certificates");
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A certificate and its private key, as PEM files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A self-signed CA, made in `dir` under `name`.pem / `name`.key.
pub fn make_ca(dir: &Path, name: &str) -> CertFiles {
    self_signed(
        dir,
        name,
        "basicConstraints=critical,CA:TRUE",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
}

/// A self-signed client certificate that no CA vouches for.
pub fn make_self_signed_client(dir: &Path, name: &str) -> CertFiles {
    self_signed(
        dir,
        name,
        "basicConstraints=critical,CA:FALSE",
        "extendedKeyUsage=clientAuth",
    )
}

fn self_signed(dir: &Path, name: &str, constraints: &str, usage: &str) -> CertFiles {
    let (cert, key) = (format!("{name}.pem"), format!("{name}.key"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &cert,
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            constraints,
            "-addext",
            usage,
        ],
    );
    CertFiles {
        cert: dir.join(cert),
        key: dir.join(key),
    }
}

/// A leaf certificate signed by `ca`, for a server (`sans` like `DNS:localhost`) or, with
/// `client`, for a client.
pub fn make_leaf(dir: &Path, name: &str, ca: &CertFiles, sans: &[&str], client: bool) -> CertFiles {
    let (cert, key, csr, ext) = (
        format!("{name}.pem"),
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.ext"),
    );
    let mut extensions = String::from("basicConstraints=CA:FALSE\n");
    extensions.push_str(if client {
        "extendedKeyUsage=clientAuth\n"
    } else {
        "extendedKeyUsage=serverAuth\n"
    });
    if !sans.is_empty() {
        extensions.push_str(&format!("subjectAltName={}\n", sans.join(",")));
    }
    std::fs::write(dir.join(&ext), extensions).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    let serial = format!(
        "{}",
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            ca.cert.to_str().unwrap(),
            "-CAkey",
            ca.key.to_str().unwrap(),
            "-set_serial",
            &serial,
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ],
    );
    CertFiles {
        cert: dir.join(cert),
        key: dir.join(key),
    }
}
