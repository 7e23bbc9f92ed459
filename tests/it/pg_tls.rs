//! Postgres over TLS as managed services run it, on a real Postgres that
//! takes TLS only (`scripts/pg-tls-server`) with a throwaway CA made for
//! the run: libpq's spellings in `postgres.url` (`sslmode=verify-full` and
//! `verify-ca`, `sslrootcert`, `sslcert`, `sslkey`), a client certificate
//! instead of a password, and each way it can be wrong, refused with the
//! reason.

use std::path::{Path, PathBuf};
use std::process::Command;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use crate::support::TestConfig;

/// The server's files and a client's, all signed by one new CA.
struct Pki {
    dir: tempfile::TempDir,
    port: u16,
}

impl Pki {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn ca() -> (Issuer<'static, KeyPair>, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "sitewatch test CA");
    let pem = params.self_signed(&key).unwrap().pem();
    (Issuer::new(params, key), pem)
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

/// Starts the TLS-only Postgres; stopped when the returned value drops.
fn start() -> Pki {
    let dir = tempfile::Builder::new()
        .prefix("sitewatch-pg-tls")
        .tempdir_in("/tmp")
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (issuer, ca_pem) = ca();
    write(dir.path(), "ca.crt", &ca_pem);
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    write(dir.path(), "server.crt", &server.pem());
    write(dir.path(), "server.key", &server_key.serialize_pem());
    let client_key = KeyPair::generate().unwrap();
    let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
    client
        .distinguished_name
        .push(DnType::CommonName, "certuser");
    let client = client.signed_by(&client_key, &issuer).unwrap();
    write(dir.path(), "client.crt", &client.pem());
    write(dir.path(), "client.key", &client_key.serialize_pem());
    // Another CA, which signed nothing here.
    write(dir.path(), "other-ca.crt", &ca().1);
    let port = crate::support::free_addr().port();
    let ok = Command::new("scripts/pg-tls-server")
        .arg(dir.path())
        .arg(port.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "scripts/pg-tls-server did not start");
    Pki { dir, port }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = Command::new("scripts/pg-tls-server")
            .arg(self.dir.path())
            .arg("stop")
            .status();
    }
}

/// Connects with `url`, then asks for the user's name.
async fn connect(url: &str) -> Result<String, String> {
    let cfg = TestConfig::with_endpoints(
        url,
        &crate::support::kafka_brokers(),
        "[[sites]]\nname = \"a\"\nurl = \"http://127.0.0.1:9/\"\n",
    );
    let settings = sitewatch::config::load(&cfg.path).map_err(|e| e.to_string())?;
    let client = sitewatch::store::connect(&settings)
        .await
        .map_err(|e| sitewatch::checker::error_chain(&e))?;
    let row = client
        .query_one("SELECT current_user::text", &[])
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_with_libpq_spellings_and_a_client_certificate() {
    let pki = start();
    let (port, p) = (pki.port, |n: &str| pki.path(n).display().to_string());
    // `sitewatch` has the password `secret`; `certuser` none.
    let url = |user: &str, host: &str, extra: &str| {
        format!(
            "postgres://{user}@{host}:{port}/postgres?sslmode={extra}&sslrootcert={}",
            p("ca.crt")
        )
    };

    // A password over verify-full; a client certificate instead of one.
    assert_eq!(
        connect(&url("sitewatch:secret", "localhost", "verify-full")).await,
        Ok("sitewatch".into())
    );
    let with_cert = format!(
        "{}&sslcert={}&sslkey={}",
        url("certuser", "localhost", "verify-full"),
        p("client.crt"),
        p("client.key")
    );
    assert_eq!(connect(&with_cert).await, Ok("certuser".into()));

    // The name on the certificate is localhost: by address, verify-full
    // refuses and verify-ca (the chain only) connects.
    let by_ip = connect(&url("sitewatch:secret", "127.0.0.1", "verify-full")).await;
    let e = by_ip.expect_err("a host name mismatch");
    assert!(e.contains("certificate verify failed"), "{e}");
    assert_eq!(
        connect(&url("sitewatch:secret", "127.0.0.1", "verify-ca")).await,
        Ok("sitewatch".into())
    );

    // The wrong CA; no client certificate where one is required.
    let wrong_ca =
        url("sitewatch:secret", "localhost", "verify-full").replace("ca.crt", "other-ca.crt");
    let e = connect(&wrong_ca).await.expect_err("the wrong CA");
    assert!(e.contains("certificate verify failed"), "{e}");
    let e = connect(&url("certuser", "localhost", "verify-full"))
        .await
        .expect_err("no client certificate");
    assert!(e.contains("certificate"), "{e}");
}
