//! A test client per test: 20 tests in this binary run in parallel, each with
//! its own `TestClient` scoped around its app code (`job.enqueue()` on the
//! current client), and each sees only its own jobs, including the jobs its
//! jobs enqueue when it runs them. No broker, no process-wide client.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use jobs_core::{Client, Error, Job, JobContext, JobError, Perform, TestClient};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Job)]
struct SignUp {
    test: String,
    n: u32,
}

#[derive(Debug, Serialize, Deserialize, Job)]
struct Welcome {
    test: String,
    n: u32,
}

impl Perform for SignUp {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        // Enqueues on the current client: the test's own, when it runs the job.
        Welcome { test: self.test, n: self.n }.enqueue().await?;
        Ok(())
    }
}

impl Perform for Welcome {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

/// App code under test: enqueues with the shortcuts, no client in sight.
async fn sign_up(test: &str, n: u32) -> Result<(), Error> {
    SignUp { test: test.to_owned(), n }.enqueue().await?;
    tokio::task::yield_now().await; // let the other tests' tasks in between
    SignUp { test: test.to_owned(), n: n + 100 }.enqueue_in(Duration::from_secs(60)).await?;
    Ok(())
}

async fn scenario(name: &str) {
    let test = TestClient::new();
    for n in 0..5 {
        test.scope(sign_up(name, n)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mine = test.jobs::<SignUp>();
    assert_eq!(mine.len(), 10, "{name}: {mine:?}");
    assert!(mine.iter().all(|job| job.test == name), "{name} saw another test's jobs: {mine:?}");
    // Run outside any scope: the jobs they enqueue still land in this test's client.
    assert_eq!(test.run_all().await.unwrap(), 20, "{name}: ten sign-ups and the ten welcomes they enqueued");
    let welcomed: Vec<String> = test.performed().iter().filter_map(|j| j.decode::<Welcome>()).map(|w| w.test).collect();
    assert_eq!(welcomed.len(), 10);
    assert!(welcomed.iter().all(|t| t == name), "{name}: {welcomed:?}");
    let err = Welcome { test: name.into(), n: 0 }.enqueue().await.unwrap_err();
    assert!(matches!(err, Error::NoGlobalClient), "outside the scope no client is set: {err:?}");
}

macro_rules! tests {
    ($($name:ident),*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            scenario(stringify!($name)).await;
        }
    )*};
}

tests!(t01, t02, t03, t04, t05, t06, t07, t08, t09, t10, t11, t12, t13, t14, t15, t16, t17, t18, t19, t20);

#[tokio::test]
async fn the_innermost_scope_wins_and_ends_with_its_future() {
    let (outer, inner) = (TestClient::new(), TestClient::new());
    outer
        .scope(async {
            Welcome { test: "outer".into(), n: 1 }.enqueue().await.unwrap();
            inner.scope(async { Welcome { test: "inner".into(), n: 2 }.enqueue().await.unwrap() }).await;
            Welcome { test: "outer".into(), n: 3 }.enqueue().await.unwrap();
        })
        .await;
    let tests = |c: &TestClient| c.jobs::<Welcome>().into_iter().map(|w| (w.test, w.n)).collect::<Vec<_>>();
    assert_eq!(tests(&outer), [("outer".into(), 1), ("outer".into(), 3)]);
    assert_eq!(tests(&inner), [("inner".to_string(), 2)]);
    assert!(Client::current().is_err(), "no client outside");
}
