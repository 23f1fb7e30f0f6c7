//! End-to-end tests against real workerd (`wrangler dev`) with real WebSocket and HTTP clients.
//!
//! One server is started for the whole run (after building the Worker once); tests use unique
//! room names so they can run in parallel. Tests that need their own server (restarts) start
//! one with [`harness::Server::start`]. The server is stopped when the run ends, pass or fail.

mod foundation;
mod harness;

use std::sync::Arc;

use libtest_mimic::{Arguments, Trial};

/// What every test gets: where the shared server listens.
pub struct Ctx {
    /// `http://127.0.0.1:PORT`.
    pub http: String,
    /// `ws://127.0.0.1:PORT`.
    pub ws: String,
}

macro_rules! trials {
    ($ctx:expr; $($test:path),* $(,)?) => {
        vec![$({
            let ctx = Arc::clone(&$ctx);
            Trial::test(stringify!($test), move || {
                harness::run($test(Arc::clone(&ctx)));
                Ok(())
            })
        }),*]
    };
}

fn main() -> std::process::ExitCode {
    let args = Arguments::from_args();
    if args.list {
        // Listing (e.g. by nextest) must not build or start anything.
        let ctx = Arc::new(Ctx {
            http: String::new(),
            ws: String::new(),
        });
        return libtest_mimic::run(&args, all(ctx)).exit_code();
    }
    harness::build_worker();
    let persist = harness::TempDir::new("e2e");
    let server = harness::Server::start(&persist.0);
    let ctx = Arc::new(Ctx {
        http: server.http(),
        ws: server.ws(),
    });
    let conclusion = libtest_mimic::run(&args, all(ctx));
    if conclusion.has_failed() {
        eprintln!("--- wrangler dev output (tail) ---\n{}", server.log_tail());
    }
    drop(server);
    conclusion.exit_code()
}

fn all(ctx: Arc<Ctx>) -> Vec<Trial> {
    trials![ctx;
        foundation::health_answers,
        foundation::unknown_route_is_404_json,
        foundation::wrong_method_is_405_with_allow,
        foundation::bad_room_names_are_refused_before_any_object,
        foundation::plain_http_to_socket_route_is_426,
        foundation::two_clients_see_each_others_messages_in_order,
        foundation::rooms_are_isolated,
        foundation::binary_msgpack_frames_arrive_intact,
        foundation::malformed_frames_get_error_frames_and_socket_survives,
        foundation::private_rooms_have_unguessable_ids,
        foundation::cors_preflight_and_origin_checks,
        foundation::demo_page_is_served,
        foundation::deploy_dry_run_succeeds_for_every_environment,
    ]
}
