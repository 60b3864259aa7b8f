//! A vhost of a test's own on the test broker, fresh (nothing declared in
//! it), made through the management API, with every permission for the
//! run's user; deleted when dropped, never panicking there.

use jobs_core::plumbing::Management;
use serde_json::json;

use jobs_core::plumbing::percent_encode as encode;

/// A fresh vhost.
#[derive(Debug)]
pub struct TestVhost {
    /// Its name.
    pub name: String,
}

impl TestVhost {
    /// Makes a vhost no other test uses.
    pub async fn create(name: &str) -> Self {
        let management = Management::new(&crate::amqp_config());
        let name = crate::unique(name);
        let path = format!("/api/vhosts/{}", encode(&name));
        management.put(&path, &json!({})).await.unwrap_or_else(|e| {
            panic!("cannot create vhost {name} (is the management plugin on? `bash deploy/rabbitmq.sh`): {e}")
        });
        let (user, _) = crate::amqp_config().url.credentials();
        let permissions = format!("/api/permissions/{}/{}", encode(&name), encode(&user));
        let all = json!({ "configure": ".*", "write": ".*", "read": ".*" });
        management.put(&permissions, &all).await.unwrap_or_else(|e| panic!("cannot give {user} vhost {name}: {e}"));
        TestVhost { name }
    }

    /// `AMQP_URL` with this vhost instead of the run's.
    pub fn url(&self) -> String {
        let url = crate::amqp_url();
        let base = url.rsplit_once('/').map_or(url.as_str(), |(base, _)| base);
        format!("{base}/{}", encode(&self.name))
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        let path = format!("/api/vhosts/{}", encode(&self.name));
        let done = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            let _ = runtime.block_on(Management::new(&crate::amqp_config()).delete(&path));
        });
        let _ = done.join();
    }
}
