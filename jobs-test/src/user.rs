//! Users of a test's own on the test broker, made through the management API.

use jobs_core::plumbing::percent_encode as encode;
use jobs_core::plumbing::Management;
use serde_json::json;

/// A user with a password and permissions (regular expressions, as
/// `rabbitmqctl set_permissions` takes them) on the run's vhost; deleted
/// when dropped, never panicking there.
#[derive(Debug)]
pub struct TestUser {
    /// The user's name.
    pub name: String,
    /// Its password.
    pub password: String,
}

impl TestUser {
    /// Creates the user (unique per run) with these permissions on the run's vhost.
    pub async fn create(name: &str, configure: &str, write: &str, read: &str) -> Self {
        let management = management();
        let name = crate::unique(name);
        let password = format!("pw-{}", crate::unique("secret"));
        let user = format!("/api/users/{}", encode(&name));
        let made = management.put(&user, &json!({ "password": password, "tags": "" })).await;
        made.unwrap_or_else(|e| {
            panic!("cannot create user {name} (is the management plugin on? `bash deploy/rabbitmq.sh`): {e}")
        });
        let permissions = format!("/api/permissions/{}/{}", encode(management.vhost()), encode(&name));
        let rules = json!({ "configure": configure, "write": write, "read": read });
        management.put(&permissions, &rules).await.unwrap_or_else(|e| panic!("cannot set permissions of {name}: {e}"));
        TestUser { name, password }
    }

    /// `AMQP_URL` as this user.
    pub fn url(&self) -> String {
        self.url_with(&self.password)
    }

    /// `AMQP_URL` as this user, with another password.
    pub fn url_with(&self, password: &str) -> String {
        let url = crate::amqp_url();
        let (scheme, rest) = url.split_once("://").expect("AMQP_URL has a scheme");
        let host = rest.split_once('@').map_or(rest, |(_, host)| host);
        format!("{scheme}://{}:{}@{host}", encode(&self.name), encode(password))
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let path = format!("/api/users/{}", encode(&self.name));
        let done = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            let _ = runtime.block_on(management().delete(&path));
        });
        let _ = done.join();
    }
}

fn management() -> Management {
    Management::new(&crate::amqp_config())
}
