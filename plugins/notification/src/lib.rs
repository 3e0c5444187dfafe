//! notification plugin: per-user notifications, written in Rust, loaded by the
//! host through plugin-api/bnb_plugin.h like the C plugins.
//!
//! Store: `notifications/<eventId>-g|h` {id, userId, kind, title, eventId,
//! eventType, reservationId?, roomId?, amount?, createdAt, read, readAt?};
//! declared fields userId (string) and createdAt (int, ms), index
//! (userId, createdAt): GET /notifications is a keyset page of mine, newest
//! first. One document per (event, user), created with expect_version 0 and the
//! event's applied mark, so a redelivered event changes nothing.
//!
//! Consumes bearbnb.reservation (ReservationConfirmed: guest + host,
//! ReservationCancelled: guest + host) and bearbnb.payment (PaymentDeclined,
//! PaymentCancelled with an amount: the payer).
//!
//! Every extern "C" entry runs under ffi::guard: a panic answers 500 (route),
//! asks for redelivery (event: BNB_EIO) or refuses the plugin (init).
//! All unsafe code is in the ffi module: the crate denies `unsafe_code`
//! everywhere else (the compiler checks it), tests apart.
#![deny(unsafe_code)]

#[allow(unsafe_code)]
pub mod ffi;
pub mod logic;

use ffi::{bnb_cfg_item_t, bnb_ctx_t, bnb_host_api_t, bnb_plugin_t, bnb_req_t, json_t, Ctx, Host, Json, Req};
use logic::{EventFacts, Role};
use std::os::raw::{c_char, c_int};
use std::ptr;

const COLL: &str = "notifications";

static CONFIG: [bnb_cfg_item_t; 1] =
    [bnb_cfg_item_t { name: ptr::null(), type_: 0, default_value: ptr::null(), help: ptr::null() }];

/// The one exported symbol the host looks for (`#[no_mangle]` counts as
/// unsafe code to the lint: the only exception outside ffi).
#[allow(unsafe_code)]
#[no_mangle]
pub static bnb_plugin: bnb_plugin_t = bnb_plugin_t {
    abi_version: ffi::BNB_ABI_VERSION,
    name: b"notification\0".as_ptr() as *const c_char,
    version: b"0.1.0\0".as_ptr() as *const c_char,
    config: &CONFIG as *const bnb_cfg_item_t,
    init: Some(notif_init),
    start: None,
    stop: None,
    fini: None,
};

extern "C" fn notif_init(ctx: *mut bnb_ctx_t, api: *const bnb_host_api_t) -> c_int {
    ffi::guard(ffi::BNB_EINVAL, || init(Ctx::from_raw(ctx), api))
}

fn init(ctx: Ctx, api: *const bnb_host_api_t) -> c_int {
    if !Host::install(api) {
        return ffi::BNB_EINVAL; // another major, or a host without storage v2 (ABI 1.1)
    }
    let h = match Host::get() {
        Some(h) => h,
        None => return ffi::BNB_EINVAL,
    };
    let idx: &[&str] = &["userId", "createdAt"];
    let mut rc = h.store_define(
        ctx,
        COLL,
        &[("userId", ffi::BNB_FIELD_STR), ("createdAt", ffi::BNB_FIELD_INT)],
        &[(idx, false)],
    );
    if rc == 0 {
        rc = h.route(ctx, "GET", "/notifications", ffi::BNB_ROLE_USER, Some(on_list));
    }
    if rc == 0 {
        rc = h.route(ctx, "POST", "/notifications/{id}/read", ffi::BNB_ROLE_USER, Some(on_read));
    }
    if rc == 0 {
        rc = h.subscribe(ctx, "bearbnb.reservation", Some(on_reservation));
    }
    if rc == 0 {
        rc = h.subscribe(ctx, "bearbnb.payment", Some(on_payment));
    }
    rc
}

// ---- events -----------------------------------------------------------------

extern "C" fn on_reservation(ctx: *mut bnb_ctx_t, ev: *const json_t) -> c_int {
    ffi::guard(ffi::BNB_EIO, || on_event(Ctx::from_raw(ctx), "bearbnb.reservation", ev))
}

extern "C" fn on_payment(ctx: *mut bnb_ctx_t, ev: *const json_t) -> c_int {
    ffi::guard(ffi::BNB_EIO, || on_event(Ctx::from_raw(ctx), "bearbnb.payment", ev))
}

fn reject(h: Host, ctx: Ctx, why: &str) -> c_int {
    h.event_reject(ctx, why);
    ffi::BNB_EINVAL
}

fn on_event(ctx: Ctx, topic: &str, ev: *const json_t) -> c_int {
    let h = match Host::get() {
        Some(h) => h,
        None => return ffi::BNB_EAGAIN,
    };
    let ev = ffi::borrow(ev);
    let (ev_id, type_) = match (ev.get("id").str(), ev.get("type").str()) {
        (Some(i), Some(t)) => (i, t),
        _ => return reject(h, ctx, "envelope without string id/type"),
    };
    let d = ev.get("data");
    let facts = EventFacts {
        topic,
        type_,
        guest_id: d.get("guestId").str(),
        host_id: d.get("hostId").str(),
        payer_id: d.get("payerId").str(),
        amount: d.get("amount").int(),
    };
    let notes = match logic::notes_for(&facts) {
        Ok(n) => n,
        Err(why) => return reject(h, ctx, &why),
    };
    if notes.is_empty() {
        return 0;
    }
    if !logic::id_ok(ev_id) || ev_id.len() > 60 {
        return reject(h, ctx, "event id is not an id");
    }
    let res_id = if topic == "bearbnb.payment" { d.get("reservationId").str() } else { d.get("id").str() };
    if let Some(r) = res_id {
        h.set_correlation(ctx, r);
    }
    let now = h.now_ms();
    for n in &notes {
        let id = logic::note_id(ev_id, n.role);
        let mut b = match Json::object() {
            Some(b) => b,
            None => return ffi::BNB_ENOMEM,
        };
        let mut ok = b.set("id", Json::string(&id))
            && b.set("userId", Json::string(&n.user))
            && b.set("kind", Json::string(n.kind))
            && b.set("title", Json::string(n.title))
            && b.set("role", Json::string(if n.role == Role::Guest { "guest" } else { "host" }))
            && b.set("eventId", Json::string(ev_id))
            && b.set("eventType", Json::string(type_))
            && b.set("createdAt", Json::int(now))
            && b.set("read", Json::boolean(false));
        if let Some(r) = res_id {
            ok = ok && b.set("reservationId", Json::string(r));
        }
        if let Some(r) = d.get("roomId").str() {
            ok = ok && b.set("roomId", Json::string(r));
        }
        if let Some(a) = facts.amount {
            ok = ok && b.set("amount", Json::int(a));
        }
        if !ok {
            return ffi::BNB_ENOMEM;
        }
        let rc = h.store_put(ctx, COLL, &id, 0, &b, Some(ev_id));
        match rc {
            0 => h.count(ctx, "notifications_created", 1.0),
            // made by an earlier delivery of this event: nothing to do
            ffi::BNB_EEXIST | ffi::BNB_EALREADY => {}
            _ => return rc, // redelivered later; the notes already made are found then
        }
    }
    0
}

// ---- routes -------------------------------------------------------------------

fn store_error(req: &Req, rc: c_int) {
    match rc {
        ffi::BNB_EINVAL => req.problem(400, "Bad Request", "invalid input"),
        ffi::BNB_ENOENT => req.problem(404, "Not Found", "not found"),
        ffi::BNB_ETIMEDOUT => req.problem(504, "Gateway Timeout", "the notification store did not answer in time"),
        ffi::BNB_EIO | ffi::BNB_EAGAIN | ffi::BNB_EEXIST => {
            req.problem(503, "Service Unavailable", "notification store unavailable, retry later")
        }
        _ => req.problem(500, "Internal Server Error", "notification store failed"),
    }
}

/// Runs a route handler: a panic (or a handler that forgot to answer) answers 500.
fn route_guard(req: *mut bnb_req_t, f: fn(Host, Ctx, &Req), ctx: *mut bnb_ctx_t) {
    let h = match Host::get() {
        Some(h) => h,
        None => return,
    };
    let r = Req::new(h, req);
    ffi::guard((), || f(h, Ctx::from_raw(ctx), &r));
    if !r.answered() {
        ffi::guard((), || r.problem(500, "Internal Server Error", "the notification service failed"));
    }
}

extern "C" fn on_list(ctx: *mut bnb_ctx_t, req: *mut bnb_req_t) {
    route_guard(req, list, ctx)
}

extern "C" fn on_read(ctx: *mut bnb_ctx_t, req: *mut bnb_req_t) {
    route_guard(req, mark_read, ctx)
}

/// GET /notifications?limit=&cursor= : my notifications, newest first.
fn list(h: Host, ctx: Ctx, req: &Req) {
    let user = match req.user() {
        Some(u) => u,
        None => return req.problem(401, "Unauthorized", "a user token is needed"),
    };
    let parsed = match req.query_string() {
        Some(raw) => logic::parse_page_query(Some(&raw)),
        None if !h.has_query_string() => {
            // an ABI 1.1 host: only the decoded values
            let mut q = String::new();
            if let Some(l) = req.query("limit") {
                q.push_str("limit=");
                q.push_str(&l.replace('%', "%25").replace('&', "%26").replace('+', "%2B"));
            }
            if let Some(c) = req.query("cursor") {
                q.push_str("&cursor=");
                q.push_str(&c.replace('%', "%25").replace('&', "%26").replace('+', "%2B"));
            }
            logic::parse_page_query(Some(&q))
        }
        None => logic::parse_page_query(None),
    };
    let (limit, cursor) = match parsed {
        Ok(p) => p,
        Err(e) => return req.problem(400, "Bad Request", &e.detail),
    };
    let (rows, next) = match h.store_query_eq(ctx, COLL, "userId", &user, "createdAt", true, limit, cursor.as_deref()) {
        Ok(r) => r,
        Err(ffi::BNB_EINVAL) if cursor.is_some() => {
            return req.problem(400, "Bad Request", "query parameter 'cursor' is not a cursor of this list")
        }
        Err(rc) => return store_error(req, rc),
    };
    let mut items = match Json::array() {
        Some(a) => a,
        None => return store_error(req, ffi::BNB_ENOMEM),
    };
    let rows_ref = rows.as_ref();
    for i in 0..rows_ref.array_len() {
        let body = rows_ref.at(i).get("body");
        // the query is by userId; checked again so that nobody ever sees another's
        if body.get("userId").str() != Some(user.as_str()) {
            continue;
        }
        if !items.push(body.deep_copy()) {
            return store_error(req, ffi::BNB_ENOMEM);
        }
    }
    let mut page = match Json::object() {
        Some(p) => p,
        None => return store_error(req, ffi::BNB_ENOMEM),
    };
    let next_v = match &next {
        Some(n) => Json::string(n),
        None => Json::null(),
    };
    if !(page.set("items", Some(items)) && page.set("next", next_v)) {
        return store_error(req, ffi::BNB_ENOMEM);
    }
    req.respond(200, page);
}

/// POST /notifications/{id}/read : marks one of mine read (another's: 404).
fn mark_read(h: Host, ctx: Ctx, req: &Req) {
    let user = match req.user() {
        Some(u) => u,
        None => return req.problem(401, "Unauthorized", "a user token is needed"),
    };
    let id = req.param("id").unwrap_or_default();
    let not_found = |req: &Req| req.problem(404, "Not Found", &format!("no notification '{}'", id));
    if !logic::id_ok(&id) {
        return not_found(req);
    }
    for _ in 0..8 {
        let (doc, version) = match h.store_get(ctx, COLL, &id) {
            Ok(d) => d,
            Err(ffi::BNB_ENOENT) => return not_found(req),
            Err(rc) => return store_error(req, rc),
        };
        if doc.as_ref().get("userId").str() != Some(user.as_str()) {
            return not_found(req);
        }
        if doc.as_ref().get("read").is_true() {
            return req.respond(200, doc);
        }
        let mut updated = match doc.as_ref().deep_copy() {
            Some(u) => u,
            None => return store_error(req, ffi::BNB_ENOMEM),
        };
        if !(updated.set("read", Json::boolean(true)) && updated.set("readAt", Json::int(h.now_ms()))) {
            return store_error(req, ffi::BNB_ENOMEM);
        }
        match h.store_put(ctx, COLL, &id, version, &updated, None) {
            0 => return req.respond(200, updated),
            ffi::BNB_EEXIST => continue, // lost a race with another read: load again
            rc => return store_error(req, rc),
        }
    }
    store_error(req, ffi::BNB_EEXIST)
}

#[cfg(test)]
#[allow(unsafe_code)]
mod tests {
    use super::*;

    #[test]
    fn guard_turns_a_panic_into_the_fallback() {
        assert_eq!(ffi::guard(ffi::BNB_EIO, || -> c_int { panic!("boom") }), ffi::BNB_EIO);
        assert_eq!(ffi::guard(ffi::BNB_EIO, || 0), 0);
    }

    // ---- a fake host: only what route_guard needs, answers recorded ----
    use std::sync::atomic::{AtomicI32, Ordering};
    use std::sync::Mutex;
    static STATUS: AtomicI32 = AtomicI32::new(0);
    static ANSWERS: AtomicI32 = AtomicI32::new(0);
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    unsafe extern "C" fn f_route(
        _: *mut bnb_ctx_t,
        _: *const c_char,
        _: *const c_char,
        _: c_int,
        _: ffi::bnb_route_fn,
    ) -> c_int {
        0
    }
    unsafe extern "C" fn f_sub(_: *mut bnb_ctx_t, _: *const c_char, _: ffi::bnb_event_fn) -> c_int {
        0
    }
    unsafe extern "C" fn f_str(_: *mut bnb_req_t, _: *const c_char) -> *const c_char {
        ptr::null()
    }
    unsafe extern "C" fn f_user(_: *mut bnb_req_t) -> *const c_char {
        b"gus\0".as_ptr() as *const c_char
    }
    unsafe extern "C" fn f_respond(_: *mut bnb_req_t, status: c_int, body: *mut json_t) {
        STATUS.store(status, Ordering::SeqCst);
        ANSWERS.fetch_add(1, Ordering::SeqCst);
        drop(ffi::borrow(body).deep_copy()); // touch it; the test leaks the stolen body
    }
    unsafe extern "C" fn f_now() -> i64 {
        1
    }
    fn fake_host() -> Host {
        // SAFETY: all-zero is a valid table (every Option None, sizes 0)
        let mut t: Box<bnb_host_api_t> = Box::new(unsafe { std::mem::zeroed() });
        t.abi_version = ffi::BNB_ABI_VERSION;
        t.size = std::mem::size_of::<bnb_host_api_t>();
        t.route = Some(f_route);
        t.subscribe = Some(f_sub);
        t.req_param = Some(f_str);
        t.req_query = Some(f_str);
        t.req_user = Some(f_user);
        t.respond_json = Some(f_respond);
        t.now_ms = Some(f_now);
        // present but never called by these tests
        t.store = Some(unsafe {
            std::mem::transmute::<usize, unsafe extern "C" fn(*mut bnb_ctx_t) -> *mut ffi::bnb_store_t>(1)
        });
        t.store_get = Some(unsafe { std::mem::transmute(1usize) });
        t.log = Some(unsafe { std::mem::transmute(1usize) });
        t.store_define = Some(unsafe { std::mem::transmute(1usize) });
        t.store_query = Some(unsafe { std::mem::transmute(1usize) });
        t.store_commit2 = Some(unsafe { std::mem::transmute(1usize) });
        assert!(Host::install(Box::leak(t)));
        Host::get().unwrap()
    }

    fn panics(_: Host, _: Ctx, _: &Req) {
        panic!("a bug in a route handler");
    }
    fn answers_then_panics(_: Host, _: Ctx, r: &Req) {
        r.problem(418, "Teapot", "answered");
        panic!("after the answer");
    }
    fn forgets(_: Host, _: Ctx, _: &Req) {}

    #[test]
    fn a_panicking_route_answers_500_once() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        fake_host();
        let req = 8usize as *mut bnb_req_t; // never dereferenced by the fake
        for (f, want) in [(panics as fn(Host, Ctx, &Req), 500), (answers_then_panics, 418), (forgets, 500)] {
            ANSWERS.store(0, Ordering::SeqCst);
            route_guard(req, f, ptr::null_mut());
            assert_eq!(STATUS.load(Ordering::SeqCst), want);
            assert_eq!(ANSWERS.load(Ordering::SeqCst), 1);
        }
    }

    #[test]
    fn exported_descriptor() {
        assert_eq!(bnb_plugin.abi_version, (1 << 16) | 4);
        // SAFETY: a static NUL-terminated string
        let name = unsafe { std::ffi::CStr::from_ptr(bnb_plugin.name) };
        assert_eq!(name.to_str().unwrap(), "notification");
        assert!(bnb_plugin.init.is_some());
    }

    #[test]
    fn init_refuses_a_missing_table() {
        assert_eq!(notif_init(ptr::null_mut(), ptr::null()), ffi::BNB_EINVAL);
    }

    #[test]
    fn json_round_trip() {
        let mut o = Json::object().unwrap();
        assert!(o.set("s", Json::string("héllo")));
        assert!(o.set("n", Json::int(-7)));
        assert!(o.set("t", Json::boolean(true)));
        let mut a = Json::array().unwrap();
        assert!(a.push(Json::int(1)));
        assert!(o.set("a", Some(a)));
        let r = o.as_ref();
        assert_eq!(r.get("s").str(), Some("héllo"));
        assert_eq!(r.get("n").int(), Some(-7));
        assert!(r.get("t").is_true());
        assert_eq!(r.get("a").array_len(), 1);
        assert_eq!(r.get("a").at(0).int(), Some(1));
        assert_eq!(r.get("missing").str(), None);
        assert_eq!(r.get("n").str(), None);
        let c = r.deep_copy().unwrap();
        drop(o);
        assert_eq!(c.as_ref().get("s").str(), Some("héllo"));
    }

    #[test]
    fn layout_is_reported() {
        let v = ffi::layout();
        assert_eq!(*v.last().unwrap(), ffi::BNB_ABI_VERSION as usize);
        let mut out = vec![0usize; v.len()];
        // SAFETY: room for v.len() numbers
        let n = unsafe { ffi::bnb_notification_ffi_layout(out.as_mut_ptr(), out.len()) };
        assert_eq!(n, v.len());
        assert_eq!(out, v);
    }
}
