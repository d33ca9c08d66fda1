//! The one tokio runtime the synchronous clients and the admin API calls share.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Runtime};

fn shared() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        // Two workers: the machine is small, and the futures spend their time waiting on Envoy.
        Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sluice-client")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start the client runtime: {e}"))
    })
}

/// Runs `future` to completion on the shared runtime from a synchronous test thread.
///
/// `Runtime::block_on` may be called from many threads at once; each call drives its own future.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    shared().block_on(future)
}

/// Spawns `future` on the shared runtime (used to run many requests concurrently).
pub(crate) fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    shared().spawn(future)
}
