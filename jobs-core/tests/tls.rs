//! `amqps://` against a RabbitMQ node of the test's own with TLS on (certificates
//! made here with openssl): a client certificate and a CA file from config; a
//! wrong CA or a missing client certificate is a clear error, not a hang; the
//! password can come from a file and never shows in errors.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use jobs_core::{AmqpConfig, Client, EnqueueOptions, Error, Job, JobContext, JobError, Perform, TlsConfig};
use jobs_test::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Job)]
struct Secure {
    n: u32,
}

impl Perform for Secure {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl is installed");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA, a server and a client certificate signed by it, and an unrelated CA.
fn make_certs() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("jobs-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let days = ["-days", "2"];
    for ca in ["ca", "wrong-ca"] {
        let (key, pem, subj) = (format!("{ca}.key"), format!("{ca}.pem"), format!("/CN=jobs-test-{ca}"));
        openssl(
            &dir,
            &[
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &pem, "-subj", &subj,
                days[0], days[1],
            ],
        );
    }
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
        .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for who in ["server", "client"] {
        let (key, csr, pem, ext) =
            (format!("{who}.key"), format!("{who}.csr"), format!("{who}.pem"), format!("{who}.ext"));
        openssl(
            &dir,
            &["req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", &format!("/CN={who}")],
        );
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-extfile",
                &ext,
                days[0],
                days[1],
            ],
        );
    }
    Command::new("chmod").args(["-R", "a+rX"]).arg(&dir).status().unwrap();
    dir
}

fn tls_config(url: &str, certs: &Path, ca: &str, client_cert: bool) -> AmqpConfig {
    let mut config = AmqpConfig::with_url(url).unwrap();
    config.reconnect_timeout = Duration::from_millis(200);
    config.tls = TlsConfig {
        ca_file: Some(certs.join(ca)),
        cert_file: client_cert.then(|| certs.join("client.pem")),
        key_file: client_cert.then(|| certs.join("client.key")),
    };
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_with_ca_and_client_certificate_and_clear_errors_when_wrong() {
    let certs = make_certs();
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let conf = format!(
        "listeners.ssl.default = 127.0.0.1:{tls_port}\nssl_options.cacertfile = {c}/ca.pem\nssl_options.certfile = {c}/server.pem\n\
         ssl_options.keyfile = {c}/server.key\nssl_options.verify = verify_peer\nssl_options.fail_if_no_peer_cert = true",
        c = certs.display()
    );
    let node = TestNode::start_with("tls", &conf);
    let url = format!("amqps://guest:guest@127.0.0.1:{tls_port}/%2f");

    let client = Client::connect(tls_config(&url, &certs, "ca.pem", true))
        .await
        .expect("TLS with the right CA and a client cert");
    client.enqueue_with(&Secure { n: 1 }, EnqueueOptions::new().queue("tls-jobs")).await.unwrap();
    client.close().await;

    let started = std::time::Instant::now();
    let err = Client::connect(tls_config(&url, &certs, "wrong-ca.pem", true)).await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    let text = jobs_core::report(&err);
    assert!(text.to_lowercase().contains("certificate") || text.contains("UnknownIssuer"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(10), "a wrong CA fails fast, it does not hang");

    let err = Client::connect(tls_config(&url, &certs, "ca.pem", false)).await.unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "the broker wants a client certificate: {err:?}");

    // The password from a file, the URL without one.
    let password_file = certs.join("password");
    std::fs::write(&password_file, "guest\n").unwrap();
    let mut config = tls_config(&format!("amqps://guest@127.0.0.1:{tls_port}/%2f"), &certs, "ca.pem", true);
    config.password_file = Some(password_file.clone());
    Client::connect(config.clone()).await.expect("password from the file");
    std::fs::write(&password_file, "hunter2-wrong\n").unwrap();
    let err = Client::connect(config).await.unwrap_err();
    let text = format!("{} {err:?}", jobs_core::report(&err));
    assert!(!text.contains("hunter2"), "the password never shows: {text}");

    let mut config = tls_config(&url, &certs, "ca.pem", true);
    config.tls.key_file = Some(certs.join("ca.pem"));
    let err = Client::connect(config).await.unwrap_err();
    assert!(err.to_string().contains("amqp.tls.key_file"), "a bad key names its key, no panic: {err}");
    drop(node);
    let _ = std::fs::remove_dir_all(&certs);
}
