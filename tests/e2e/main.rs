//! End-to-end tests against real workerd (`wrangler dev`) with real WebSocket and HTTP clients.
//!
//! One server is started for the whole run (after building the Worker once); tests use unique
//! room names so they can run in parallel. Tests that need their own server (restarts) start
//! one with [`harness::Server::start`]. The server is stopped when the run ends, pass or fail.

mod coord;
mod edge;
mod flood;
mod foundation;
mod internals;
mod multiplex;
mod ops;
mod pusher;
mod reliability;
mod rooms;
mod services;
mod sessions;
mod speech;

use std::sync::Arc;

use libtest_mimic::{Arguments, Trial};
use roomkeeper_testkit::harness;

/// Held by the heaviest tests (2,000 sockets, the unauthenticated flood, 64 concurrent
/// lock long-polls) so they never run at the same time: together they overload this
/// 2-core machine's local runtime, which then answers with wrangler's own 503s.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What every test gets: where the shared server listens.
pub struct Ctx {
    /// `http://127.0.0.1:PORT`.
    pub http: String,
    /// `ws://127.0.0.1:PORT`.
    pub ws: String,
    /// A second server with anonymous access off and tight limits ([`STRICT_VARS`]).
    pub strict_http: String,
    /// Its WebSocket base URL.
    pub strict_ws: String,
    /// Where the default server's output (its logs) goes.
    pub log: std::path::PathBuf,
}

/// Settings of the strict server: what tests of refusals need.
pub const STRICT_VARS: &[(&str, &str)] = &[
    ("ALLOW_ANONYMOUS", "false"),
    ("ROOM_MAX_MEMBERS", "2"),
    ("ROOM_MAX_CONNECTIONS", "3"),
    ("ROOM_PUBLISH_RATE", "10"),
    ("ROOM_PUBLISH_BURST", "3"),
    ("ROOM_MAX_STRIKES", "5"),
    ("ROOM_HISTORY_MAX_MESSAGES", "5"),
    // The dev key with every scope, and a key with the default scopes (publish, read).
    (
        "API_KEYS",
        "dev[admin]:roomkeeper-local-dev-api-key,reader:roomkeeper-reader-test-key",
    ),
    // The local connect and api budgets (many tests connect from 127.0.0.1), and the public
    // routes' per-address policies at their defaults (tests/e2e/edge.rs).
    (
        "LIMIT_POLICIES",
        r#"{"connect":{"rate":1000,"period_ms":10000,"burst":500},"api":{"rate":10000,"period_ms":60000,"burst":2000}}"#,
    ),
];

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
            strict_http: String::new(),
            strict_ws: String::new(),
            log: Default::default(),
        });
        return libtest_mimic::run(&args, all(ctx)).exit_code();
    }
    harness::build_worker();
    let persist = harness::TempDir::new("e2e");
    let server = harness::Server::start(&persist.0);
    let strict_persist = harness::TempDir::new("e2e-strict");
    let strict = harness::Server::start_with(&strict_persist.0, STRICT_VARS);
    let ctx = Arc::new(Ctx {
        http: server.http(),
        ws: server.ws(),
        strict_http: strict.http(),
        strict_ws: strict.ws(),
        log: server.log.clone(),
    });
    let conclusion = libtest_mimic::run(&args, all(ctx));
    if conclusion.has_failed() {
        eprintln!("--- wrangler dev output (tail) ---\n{}", server.log_tail());
        eprintln!("--- strict server output (tail) ---\n{}", strict.log_tail());
    }
    drop(server);
    drop(strict);
    conclusion.exit_code()
}

fn all(ctx: Arc<Ctx>) -> Vec<Trial> {
    // The soak runs only when asked for (`ROOMKEEPER_SOAK=1`, `make soak`): it takes minutes.
    let soak = {
        let ctx = Arc::clone(&ctx);
        Trial::test(
            "reliability::soak_no_loss_no_duplicates_flat_memory",
            move || {
                harness::run(reliability::soak_no_loss_no_duplicates_flat_memory(ctx));
                Ok(())
            },
        )
        .with_ignored_flag(std::env::var_os("ROOMKEEPER_SOAK").is_none())
    };
    let mut all = trials![ctx;
        edge::every_public_route_has_a_per_address_budget,
        internals::schema_statements_run_once_per_object,
        pusher::one_socket_on_100_channels_gets_one_trigger_on_all,
        pusher::two_thousand_sockets_over_the_shards_each_get_200_events_in_order,
        pusher::pusher_sockets_spend_the_connect_budget,
        internals::internal_errors_are_logged_with_the_request_id,
        edge::ipv6_callers_share_the_budget_of_their_64,
        edge::a_socket_request_that_is_no_upgrade_spends_nothing,
        edge::tokens_honour_nbf_and_the_maximum_lifetime,
        edge::api_keys_hold_only_their_scopes,
        edge::the_ops_feed_is_private,
        flood::an_unauthenticated_flood_leaves_bounded_state,
        reliability::crash_mid_publishing_loses_nothing_acknowledged,
        reliability::a_panic_inside_an_object_leaves_nothing_broken,
        foundation::health_answers,
        multiplex::one_socket_in_20_rooms_gets_each_stream_once_in_order_and_recovers_every_room,
        multiplex::v2_rooms_open_as_the_token_says,
        multiplex::a_v2_socket_is_closed_4001_when_its_token_expires,
        multiplex::a_v2_socket_that_falls_behind_across_its_rooms_is_closed_too_slow_and_recovers,
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
        foundation::request_ids_reach_the_logs_and_secrets_do_not,
        ops::metrics_move_by_exactly_the_workload,
        ops::delivery_failures_raise_bounded_alerts,
        ops::admin_lists_and_closes_rooms_with_an_audit_trail,
        ops::admin_closes_a_connection_lists_sessions_and_overrides_a_lock,
        ops::configuration_errors_are_reported_clearly,
        ops::refusal_spikes_raise_one_alert,
        rooms::room_figures_count_exactly_and_survive_a_restart,
        rooms::presence_counts_each_user_once,
        rooms::recovery_replays_exactly_the_missed_messages,
        rooms::recovery_across_a_gap_or_epoch_reloads_and_says_so,
        rooms::retried_publishes_are_idempotent,
        rooms::acks_and_refusals_carry_ids_and_codes,
        rooms::heartbeat_is_answered,
        rooms::join_limits_are_enforced,
        rooms::auth_refusals_are_documented,
        rooms::expired_tokens_are_refused_and_end_sessions,
        rooms::hardening_deep_bodies_are_refused_and_history_stays_readable,
        rooms::hardening_history_since_beyond_any_offset_is_empty,
        rooms::publish_flood_is_limited_then_disconnected,
        rooms::member_and_connection_caps,
        rooms::http_broadcast_reaches_every_member,
        rooms::multi_room_broadcast_reports_per_room,
        rooms::room_info_and_history_endpoints,
        rooms::state_survives_hibernation,
        rooms::no_loss_across_a_restart,
        rooms::a_reader_that_falls_behind_is_closed_too_slow_and_recovers,
        rooms::the_room_publish_ceiling_spans_connections_and_the_http_broadcast,
        services::valuation_estimates_with_interval_and_comparables,
        services::valuation_refuses_bad_and_out_of_range_input,
        services::valuation_sales_import_reports_bad_rows_and_refits,
        services::lead_flow_end_to_end,
        services::lead_validation_errors_store_nothing,
        services::leads_list_patch_and_export,
        services::signed_webhooks_become_payment_notifications,
        services::unverified_webhooks_keep_a_bounded_log,
        services::racing_status_changes_audit_only_the_winner,
        services::an_unknown_stored_status_is_refused_not_read_as_new,
        services::imports_past_the_fit_cap_keep_estimates_answering,
        services::services_bodies_are_capped_while_streaming,
        sessions::daily_caps_hold_across_a_users_sessions,
        sessions::voice_and_chat_with_an_openai_compatible_provider,
        sessions::voice_without_a_provider_is_honest,
        sessions::voice_bad_input_gets_error_codes,
        sessions::chatbot_answers_and_submits_a_lead,
        sessions::voice_context_survives_a_restart,
        sessions::chatbot_refuses_bad_frames_and_floods,
        sessions::voice_stream_resumes_after_hibernation,
        sessions::session_sockets_are_authenticated_like_rooms,
        speech::a_voice_agent_speaks_its_reply_in_order_and_barge_in_stops_it,
        speech::a_turn_model_holds_an_unfinished_turn_for_more_speech,
        coord::twenty_concurrent_acquirers_take_turns_in_fifo_order,
        coord::an_unrenewed_lease_expires_and_passes_to_the_next_waiter,
        coord::lock_bad_input_answers_documented_errors,
        coord::limiter_refuses_as_the_core_predicts_and_survives_a_restart,
        coord::limit_check_bad_input_answers_documented_errors,
        coord::floods_are_limited_per_ip_and_per_api_key,
    ];
    all.push(soak);
    all
}
