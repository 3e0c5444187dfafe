//! The C boundary, and the only module with `unsafe` code.
//!
//! Hand-written declarations of plugin-api/bnb_plugin.h (ABI 1.4) and of the
//! few jansson functions the plugin calls, plus thin safe wrappers over them.
//! `bnb_notification_ffi_layout` (below) reports the size and offset of every
//! declared member; tests/plugins/notification/test_ffi_layout.c compares them
//! with what the C compiler says for the header, so a change of the header
//! that these declarations miss fails the build's tests.
//!
//! Ownership, as the header words it:
//!   - `JsonRef<'a>` is a borrowed `json_t *` (an event, a request body, a
//!     member of another value): never freed here.
//!   - `Json` owns one reference (what jansson's constructors and store_get /
//!     store_query return: "caller frees with json_decref"); dropping it calls
//!     json_decref. `Json::into_raw` hands the reference to a function that
//!     steals it (respond_json, json_object_set_new).
//!   - `char *next` of store_query is freed with libc's free().
//!
//! Panics: every `extern "C"` entry point of the plugin (lib.rs) runs its body
//! through `guard`, which catches a panic so that it never unwinds into C.
#![allow(non_camel_case_types)]

use std::ffi::{CStr, CString};
use std::marker::PhantomData;
use std::os::raw::{c_char, c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

// ---- bnb_plugin.h ---------------------------------------------------------

pub const BNB_ABI_MAJOR: u32 = 1;
pub const BNB_ABI_MINOR: u32 = 4;
pub const BNB_ABI_VERSION: u32 = (BNB_ABI_MAJOR << 16) | BNB_ABI_MINOR;

pub const BNB_OK: c_int = 0;
pub const BNB_ENOENT: c_int = -2;
pub const BNB_EIO: c_int = -5;
pub const BNB_EAGAIN: c_int = -11;
pub const BNB_ENOMEM: c_int = -12;
pub const BNB_EEXIST: c_int = -17;
pub const BNB_EINVAL: c_int = -22;
pub const BNB_EALREADY: c_int = -114;
pub const BNB_ETIMEDOUT: c_int = -110;
pub const BNB_ETAKEN: c_int = -73;

#[repr(C)]
pub struct bnb_ctx_t {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct bnb_req_t {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct bnb_store_t {
    _opaque: [u8; 0],
}
#[repr(C)]
pub struct bnb_stream_t {
    _opaque: [u8; 0],
}

/// jansson's `json_t` (jansson.h 2.x): its type and reference count are
/// public in the header, because json_decref / json_is_* are inline there.
#[repr(C)]
pub struct json_t {
    pub type_: c_int,
    pub refcount: AtomicUsize,
}
pub const JSON_OBJECT: c_int = 0;
pub const JSON_ARRAY: c_int = 1;
pub const JSON_STRING: c_int = 2;
pub const JSON_INTEGER: c_int = 3;
pub const JSON_TRUE: c_int = 5;

pub type bnb_cfg_type_t = c_int;
pub const BNB_CFG_STRING: bnb_cfg_type_t = 1;

#[repr(C)]
pub struct bnb_cfg_item_t {
    pub name: *const c_char,
    pub type_: bnb_cfg_type_t,
    pub default_value: *const c_char,
    pub help: *const c_char,
}

pub type bnb_route_fn = Option<unsafe extern "C" fn(ctx: *mut bnb_ctx_t, req: *mut bnb_req_t)>;
pub type bnb_event_fn = Option<unsafe extern "C" fn(ctx: *mut bnb_ctx_t, event: *const json_t) -> c_int>;

pub type bnb_role_t = c_int;
pub const BNB_ROLE_USER: bnb_role_t = 1;

pub type bnb_write_op_t = c_int;
pub const BNB_WRITE_PUT: bnb_write_op_t = 1;

#[repr(C)]
pub struct bnb_write_t {
    pub op: bnb_write_op_t,
    pub coll: *const c_char,
    pub id: *const c_char,
    pub expect_version: i64,
    pub body: *const json_t,
    pub key1: *const c_char,
    pub key2: *const c_char,
}

#[repr(C)]
pub struct bnb_event_out_t {
    pub topic: *const c_char,
    pub type_: *const c_char,
    pub subject: *const c_char,
    pub correlation_id: *const c_char,
    pub data: *const json_t,
}

pub type bnb_field_type_t = c_int;
pub const BNB_FIELD_STR: bnb_field_type_t = 1;
pub const BNB_FIELD_INT: bnb_field_type_t = 2;

#[repr(C)]
pub struct bnb_field_def_t {
    pub name: *const c_char,
    pub type_: bnb_field_type_t,
}

pub const BNB_INDEX_MAX_FIELDS: usize = 4;

#[repr(C)]
pub struct bnb_index_def_t {
    pub fields: [*const c_char; BNB_INDEX_MAX_FIELDS + 1],
    pub unique: c_int,
}

#[repr(C)]
pub struct bnb_coll_def_t {
    pub name: *const c_char,
    pub fields: *const bnb_field_def_t,
    pub nfields: usize,
    pub indexes: *const bnb_index_def_t,
    pub nindexes: usize,
}

pub type bnb_q_op_t = c_int;
pub const BNB_Q_EQ: bnb_q_op_t = 1;

#[repr(C)]
pub struct bnb_cond_t {
    pub field: *const c_char,
    pub op: bnb_q_op_t,
    pub str_: *const c_char,
    pub num: i64,
}

#[repr(C)]
pub struct bnb_query_t {
    pub coll: *const c_char,
    pub conds: *const bnb_cond_t,
    pub nconds: usize,
    pub order_by: *const c_char,
    pub descending: c_int,
    pub limit: usize,
    pub cursor: *const c_char,
}

#[repr(C)]
pub struct bnb_commit_t {
    pub op: bnb_write_op_t,
    pub coll: *const c_char,
    pub id: *const c_char,
    pub expect_version: i64,
    pub body: *const json_t,
    pub events: *const bnb_event_out_t,
    pub nevents: usize,
    pub applied_event_id: *const c_char,
    pub set_claims: c_int,
    pub claims: *const *const c_char,
    pub nclaims: usize,
}

/// bnb_host_api_t, member for member (append-only in the header). Every
/// function pointer is an Option: a member appended after the host's minor
/// may be absent (see `Host::has`).
#[repr(C)]
pub struct bnb_host_api_t {
    pub abi_version: u32,
    pub size: usize,
    // since 1: registration
    pub route:
        Option<unsafe extern "C" fn(*mut bnb_ctx_t, *const c_char, *const c_char, bnb_role_t, bnb_route_fn) -> c_int>,
    pub subscribe: Option<unsafe extern "C" fn(*mut bnb_ctx_t, *const c_char, bnb_event_fn) -> c_int>,
    pub set_userdata: Option<unsafe extern "C" fn(*mut bnb_ctx_t, *mut c_void)>,
    pub userdata: Option<unsafe extern "C" fn(*mut bnb_ctx_t) -> *mut c_void>,
    pub config: Option<unsafe extern "C" fn(*mut bnb_ctx_t, *const c_char) -> *const c_char>,
    pub name: Option<unsafe extern "C" fn(*mut bnb_ctx_t) -> *const c_char>,
    // since 1: requests
    pub req_method: Option<unsafe extern "C" fn(*mut bnb_req_t) -> *const c_char>,
    pub req_param: Option<unsafe extern "C" fn(*mut bnb_req_t, *const c_char) -> *const c_char>,
    pub req_query: Option<unsafe extern "C" fn(*mut bnb_req_t, *const c_char) -> *const c_char>,
    pub req_body: Option<unsafe extern "C" fn(*mut bnb_req_t) -> *const json_t>,
    pub req_user: Option<unsafe extern "C" fn(*mut bnb_req_t) -> *const c_char>,
    pub req_role: Option<unsafe extern "C" fn(*mut bnb_req_t) -> *const c_char>,
    pub req_header: Option<unsafe extern "C" fn(*mut bnb_req_t, *const c_char) -> *const c_char>,
    pub respond_json: Option<unsafe extern "C" fn(*mut bnb_req_t, c_int, *mut json_t)>,
    pub respond_problem: Option<unsafe extern "C" fn(*mut bnb_req_t, c_int, *const c_char, *const c_char, ...)>,
    pub respond_empty: Option<unsafe extern "C" fn(*mut bnb_req_t, c_int)>,
    pub respond_header: Option<unsafe extern "C" fn(*mut bnb_req_t, *const c_char, *const c_char)>,
    // since 1: storage
    pub store: Option<unsafe extern "C" fn(*mut bnb_ctx_t) -> *mut bnb_store_t>,
    pub store_get: Option<
        unsafe extern "C" fn(*mut bnb_store_t, *const c_char, *const c_char, *mut *mut json_t, *mut i64) -> c_int,
    >,
    pub store_list:
        Option<unsafe extern "C" fn(*mut bnb_store_t, *const c_char, c_int, *const c_char, *mut *mut json_t) -> c_int>,
    pub store_commit: Option<
        unsafe extern "C" fn(
            *mut bnb_store_t,
            *const bnb_write_t,
            *const bnb_event_out_t,
            usize,
            *const c_char,
            *mut i64,
        ) -> c_int,
    >,
    // since 1: events
    pub event_reject: Option<unsafe extern "C" fn(*mut bnb_ctx_t, *const c_char, ...)>,
    // since 1: calls
    pub call: Option<
        unsafe extern "C" fn(
            *mut bnb_ctx_t,
            *const c_char,
            *const c_char,
            *const c_char,
            *const json_t,
            *mut c_int,
            *mut *mut json_t,
        ) -> c_int,
    >,
    // since 1: observability
    pub log: Option<unsafe extern "C" fn(*mut bnb_ctx_t, *const c_char, *const c_char, ...)>,
    pub count: Option<unsafe extern "C" fn(*mut bnb_ctx_t, *const c_char, f64)>,
    pub set_correlation: Option<unsafe extern "C" fn(*mut bnb_ctx_t, *const c_char)>,
    pub uuid: Option<unsafe extern "C" fn(*mut c_char)>,
    pub now_ms: Option<unsafe extern "C" fn() -> i64>,
    // since 1.1: storage v2
    pub store_define: Option<unsafe extern "C" fn(*mut bnb_ctx_t, *const bnb_coll_def_t, usize) -> c_int>,
    pub store_query:
        Option<unsafe extern "C" fn(*mut bnb_store_t, *const bnb_query_t, *mut *mut json_t, *mut *mut c_char) -> c_int>,
    pub store_commit2: Option<unsafe extern "C" fn(*mut bnb_store_t, *const bnb_commit_t, *mut i64) -> c_int>,
    // since 1.2: requests
    pub req_query_string: Option<unsafe extern "C" fn(*mut bnb_req_t) -> *const c_char>,
    // since 1.3: streamed answers (this plugin does not stream)
    pub stream_open: Option<unsafe extern "C" fn(*mut bnb_req_t, c_int, *const c_char) -> *mut bnb_stream_t>,
    pub stream_write: Option<unsafe extern "C" fn(*mut bnb_stream_t, *const c_void, usize) -> c_int>,
    pub stream_close: Option<unsafe extern "C" fn(*mut bnb_stream_t)>,
    // since 1.4: storage (this plugin does not use it)
    pub store_get_many: Option<
        unsafe extern "C" fn(*mut bnb_store_t, *const c_char, *const *const c_char, usize, *mut *mut json_t) -> c_int,
    >,
}

#[repr(C)]
pub struct bnb_plugin_t {
    pub abi_version: u32,
    pub name: *const c_char,
    pub version: *const c_char,
    pub config: *const bnb_cfg_item_t,
    pub init: Option<unsafe extern "C" fn(*mut bnb_ctx_t, *const bnb_host_api_t) -> c_int>,
    pub start: Option<unsafe extern "C" fn(*mut bnb_ctx_t) -> c_int>,
    pub stop: Option<unsafe extern "C" fn(*mut bnb_ctx_t)>,
    pub fini: Option<unsafe extern "C" fn(*mut bnb_ctx_t)>,
}

// The exported descriptor and the config table are immutable statics holding
// pointers to static strings: safe to share between threads.
unsafe impl Sync for bnb_plugin_t {}
unsafe impl Sync for bnb_cfg_item_t {}

// ---- jansson ---------------------------------------------------------------

#[link(name = "jansson")]
extern "C" {
    fn json_delete(json: *mut json_t);
    fn json_object() -> *mut json_t;
    fn json_array() -> *mut json_t;
    fn json_stringn(value: *const c_char, len: usize) -> *mut json_t;
    fn json_integer(value: i64) -> *mut json_t;
    fn json_true() -> *mut json_t;
    fn json_false() -> *mut json_t;
    fn json_null() -> *mut json_t;
    fn json_object_get(object: *const json_t, key: *const c_char) -> *mut json_t;
    fn json_object_set_new(object: *mut json_t, key: *const c_char, value: *mut json_t) -> c_int;
    fn json_array_size(array: *const json_t) -> usize;
    fn json_array_get(array: *const json_t, index: usize) -> *mut json_t;
    fn json_array_append_new(array: *mut json_t, value: *mut json_t) -> c_int;
    fn json_string_value(string: *const json_t) -> *const c_char;
    fn json_string_length(string: *const json_t) -> usize;
    fn json_integer_value(integer: *const json_t) -> i64;
    fn json_deep_copy(value: *const json_t) -> *mut json_t;
}

extern "C" {
    fn free(p: *mut c_void);
}

/// jansson.h's inline json_decref: the static `true`/`false`/`null` carry
/// refcount (size_t)-1 and are never freed.
unsafe fn decref(j: *mut json_t) {
    if !j.is_null()
        && (*j).refcount.load(Ordering::Relaxed) != usize::MAX
        && (*j).refcount.fetch_sub(1, Ordering::Release) == 1
    {
        json_delete(j);
    }
}

/// A borrowed JSON value (NULL-safe: every accessor of a null ref returns None).
#[derive(Clone, Copy)]
pub struct JsonRef<'a> {
    p: *const json_t,
    _life: PhantomData<&'a json_t>,
}

impl<'a> JsonRef<'a> {
    fn new(p: *const json_t) -> JsonRef<'a> {
        JsonRef { p, _life: PhantomData }
    }
    fn type_of(&self) -> Option<c_int> {
        if self.p.is_null() {
            None
        } else {
            // SAFETY: a non-null json_t borrowed for 'a
            Some(unsafe { (*self.p).type_ })
        }
    }
    pub fn is_object(&self) -> bool {
        self.type_of() == Some(JSON_OBJECT)
    }
    pub fn get(&self, key: &str) -> JsonRef<'a> {
        if !self.is_object() {
            return JsonRef::new(ptr::null());
        }
        match CString::new(key) {
            // SAFETY: object checked above; key NUL-terminated
            Ok(k) => JsonRef::new(unsafe { json_object_get(self.p, k.as_ptr()) }),
            Err(_) => JsonRef::new(ptr::null()),
        }
    }
    /// The string's bytes as UTF-8 (jansson only holds UTF-8), None otherwise.
    pub fn str(&self) -> Option<&'a str> {
        if self.type_of() != Some(JSON_STRING) {
            return None;
        }
        // SAFETY: a string value: its buffer holds `len` bytes and lives as the value
        let bytes = unsafe {
            let s = json_string_value(self.p);
            std::slice::from_raw_parts(s as *const u8, json_string_length(self.p))
        };
        std::str::from_utf8(bytes).ok()
    }
    pub fn int(&self) -> Option<i64> {
        if self.type_of() == Some(JSON_INTEGER) {
            // SAFETY: an integer value
            Some(unsafe { json_integer_value(self.p) })
        } else {
            None
        }
    }
    pub fn is_true(&self) -> bool {
        self.type_of() == Some(JSON_TRUE)
    }
    pub fn array_len(&self) -> usize {
        if self.type_of() == Some(JSON_ARRAY) {
            // SAFETY: an array value
            unsafe { json_array_size(self.p) }
        } else {
            0
        }
    }
    pub fn at(&self, i: usize) -> JsonRef<'a> {
        if i < self.array_len() {
            // SAFETY: an array with more than i members
            JsonRef::new(unsafe { json_array_get(self.p, i) })
        } else {
            JsonRef::new(ptr::null())
        }
    }
    /// A new reference to a deep copy (to change it without touching the borrowed one).
    pub fn deep_copy(&self) -> Option<Json> {
        if self.p.is_null() {
            return None;
        }
        // SAFETY: a valid value; the copy is a new owned reference
        Json::from_raw(unsafe { json_deep_copy(self.p) })
    }
}

/// Borrows a value the host lends for the call (an event envelope).
pub fn borrow<'a>(p: *const json_t) -> JsonRef<'a> {
    JsonRef::new(p)
}

/// One owned reference to a JSON value: json_decref on drop.
pub struct Json {
    p: *mut json_t,
}

impl Drop for Json {
    fn drop(&mut self) {
        // SAFETY: we own one reference
        unsafe { decref(self.p) }
    }
}

impl Json {
    /// Takes ownership of one reference; None for NULL (allocation failure).
    fn from_raw(p: *mut json_t) -> Option<Json> {
        if p.is_null() {
            None
        } else {
            Some(Json { p })
        }
    }
    /// Gives the reference away (to a function that steals it).
    fn into_raw(self) -> *mut json_t {
        let p = self.p;
        std::mem::forget(self);
        p
    }
    pub fn as_ref(&self) -> JsonRef<'_> {
        JsonRef::new(self.p)
    }
    pub fn object() -> Option<Json> {
        // SAFETY: constructor, returns a new reference or NULL
        Json::from_raw(unsafe { json_object() })
    }
    pub fn array() -> Option<Json> {
        // SAFETY: as above
        Json::from_raw(unsafe { json_array() })
    }
    pub fn string(s: &str) -> Option<Json> {
        // SAFETY: s.len() bytes of UTF-8 (jansson copies them)
        Json::from_raw(unsafe { json_stringn(s.as_ptr() as *const c_char, s.len()) })
    }
    pub fn int(v: i64) -> Option<Json> {
        // SAFETY: as above
        Json::from_raw(unsafe { json_integer(v) })
    }
    pub fn boolean(v: bool) -> Option<Json> {
        // SAFETY: as above (the static true/false are never freed)
        Json::from_raw(unsafe {
            if v {
                json_true()
            } else {
                json_false()
            }
        })
    }
    pub fn null() -> Option<Json> {
        // SAFETY: as above
        Json::from_raw(unsafe { json_null() })
    }
    /// Sets `key` of an object to `value` (consumed). false on failure.
    pub fn set(&mut self, key: &str, value: Option<Json>) -> bool {
        let (k, v) = match (CString::new(key), value) {
            (Ok(k), Some(v)) => (k, v),
            _ => return false,
        };
        // SAFETY: json_object_set_new steals v's reference, also on failure
        unsafe { json_object_set_new(self.p, k.as_ptr(), v.into_raw()) == 0 }
    }
    /// Appends `value` (consumed) to an array. false on failure.
    pub fn push(&mut self, value: Option<Json>) -> bool {
        match value {
            // SAFETY: json_array_append_new steals the reference, also on failure
            Some(v) => unsafe { json_array_append_new(self.p, v.into_raw()) == 0 },
            None => false,
        }
    }
}

// ---- the host ----------------------------------------------------------------

static HOST: AtomicPtr<bnb_host_api_t> = AtomicPtr::new(ptr::null_mut());

fn cstr(s: &str) -> CString {
    // interior NULs cannot be represented: cut there
    let end = s.find('\0').unwrap_or(s.len());
    CString::new(&s[..end]).unwrap_or_default()
}

fn from_c<'a>(p: *const c_char) -> Option<&'a str> {
    if p.is_null() {
        None
    } else {
        // SAFETY: the host returns NUL-terminated strings it keeps alive for the call ("borrowed")
        unsafe { CStr::from_ptr(p) }.to_str().ok()
    }
}

/// The host's function table (set once by init, read-only afterwards).
#[derive(Clone, Copy)]
pub struct Host {
    api: &'static bnb_host_api_t,
}

macro_rules! member_end {
    ($field:ident) => {{
        let base = std::mem::MaybeUninit::<bnb_host_api_t>::uninit();
        let b = base.as_ptr();
        // SAFETY: only the address of the member is taken, nothing is read
        let f = unsafe { ptr::addr_of!((*b).$field) };
        (f as usize - b as usize) + std::mem::size_of_val(unsafe { &*f })
    }};
}

impl Host {
    /// Remembers the table given to init. false when its major is not ours or
    /// a member this plugin needs (up to store_commit2, ABI 1.1) is missing.
    pub fn install(api: *const bnb_host_api_t) -> bool {
        if api.is_null() {
            return false;
        }
        // SAFETY: the host's table lives as long as the process (it outlives the plugin)
        let a: &'static bnb_host_api_t = unsafe { &*api };
        if a.abi_version >> 16 != BNB_ABI_MAJOR || a.size < member_end!(store_commit2) {
            return false;
        }
        let ok = a.route.is_some()
            && a.subscribe.is_some()
            && a.req_param.is_some()
            && a.req_query.is_some()
            && a.req_user.is_some()
            && a.respond_json.is_some()
            && a.store.is_some()
            && a.store_get.is_some()
            && a.log.is_some()
            && a.now_ms.is_some()
            && a.store_define.is_some()
            && a.store_query.is_some()
            && a.store_commit2.is_some();
        if ok {
            HOST.store(api as *mut bnb_host_api_t, Ordering::Release);
        }
        ok
    }
    pub fn get() -> Option<Host> {
        let p = HOST.load(Ordering::Acquire);
        if p.is_null() {
            None
        } else {
            // SAFETY: set by install from the host's static table
            Some(Host { api: unsafe { &*p } })
        }
    }
    /// BNB_HAS(host, req_query_string) (ABI 1.2).
    pub fn has_query_string(&self) -> bool {
        self.api.size >= member_end!(req_query_string) && self.api.req_query_string.is_some()
    }

    pub fn route(&self, ctx: Ctx, method: &str, pattern: &str, who: bnb_role_t, f: bnb_route_fn) -> c_int {
        let (m, p) = (cstr(method), cstr(pattern));
        // SAFETY: checked present by install; strings copied by the host
        unsafe { (self.api.route.unwrap())(ctx.0, m.as_ptr(), p.as_ptr(), who, f) }
    }
    pub fn subscribe(&self, ctx: Ctx, topic: &str, f: bnb_event_fn) -> c_int {
        let t = cstr(topic);
        // SAFETY: as above
        unsafe { (self.api.subscribe.unwrap())(ctx.0, t.as_ptr(), f) }
    }
    pub fn log(&self, ctx: Ctx, level: &str, msg: &str) {
        let (l, m) = (cstr(level), cstr(msg));
        // SAFETY: "%s" with one NUL-terminated string
        unsafe { (self.api.log.unwrap())(ctx.0, l.as_ptr(), b"%s\0".as_ptr() as *const c_char, m.as_ptr()) }
    }
    pub fn now_ms(&self) -> i64 {
        // SAFETY: no arguments
        unsafe { (self.api.now_ms.unwrap())() }
    }
    pub fn set_correlation(&self, ctx: Ctx, id: &str) {
        if let Some(f) = self.api.set_correlation {
            let c = cstr(id);
            // SAFETY: copied by the host
            unsafe { f(ctx.0, c.as_ptr()) }
        }
    }
    /// event_reject with a fixed reason (the handler then returns BNB_EINVAL).
    pub fn event_reject(&self, ctx: Ctx, reason: &str) {
        if let Some(f) = self.api.event_reject {
            let r = cstr(reason);
            // SAFETY: "%s" with one NUL-terminated string
            unsafe { f(ctx.0, b"%s\0".as_ptr() as *const c_char, r.as_ptr()) }
        }
    }
    pub fn count(&self, ctx: Ctx, name: &str, delta: f64) {
        if let Some(f) = self.api.count {
            let n = cstr(name);
            // SAFETY: copied by the host
            unsafe { f(ctx.0, n.as_ptr(), delta) }
        }
    }

    // -- storage --

    fn store(&self, ctx: Ctx) -> *mut bnb_store_t {
        // SAFETY: present (install)
        unsafe { (self.api.store.unwrap())(ctx.0) }
    }

    /// Declares `coll` with string/int fields and indexes (each a list of field names).
    pub fn store_define(
        &self,
        ctx: Ctx,
        coll: &str,
        fields: &[(&str, bnb_field_type_t)],
        indexes: &[(&[&str], bool)],
    ) -> c_int {
        let name = cstr(coll);
        let fnames: Vec<CString> = fields.iter().map(|f| cstr(f.0)).collect();
        let fdefs: Vec<bnb_field_def_t> =
            fields.iter().zip(fnames.iter()).map(|(f, n)| bnb_field_def_t { name: n.as_ptr(), type_: f.1 }).collect();
        let inames: Vec<Vec<CString>> = indexes.iter().map(|i| i.0.iter().map(|s| cstr(s)).collect()).collect();
        let mut idefs: Vec<bnb_index_def_t> = Vec::new();
        for (i, names) in indexes.iter().zip(inames.iter()) {
            if names.len() > BNB_INDEX_MAX_FIELDS {
                return BNB_EINVAL;
            }
            let mut d = bnb_index_def_t { fields: [ptr::null(); BNB_INDEX_MAX_FIELDS + 1], unique: i.1 as c_int };
            for (k, n) in names.iter().enumerate() {
                d.fields[k] = n.as_ptr();
            }
            idefs.push(d);
        }
        let def = bnb_coll_def_t {
            name: name.as_ptr(),
            fields: fdefs.as_ptr(),
            nfields: fdefs.len(),
            indexes: idefs.as_ptr(),
            nindexes: idefs.len(),
        };
        // SAFETY: every pointer lives until the call returns ("borrowed for the call")
        unsafe { (self.api.store_define.unwrap())(ctx.0, &def, 1) }
    }

    /// store_get: Ok((body, version)) or the BNB_E* code.
    pub fn store_get(&self, ctx: Ctx, coll: &str, id: &str) -> Result<(Json, i64), c_int> {
        let (c, i) = (cstr(coll), cstr(id));
        let mut body: *mut json_t = ptr::null_mut();
        let mut version: i64 = 0;
        // SAFETY: out-pointers to locals; *body is ours (caller frees with json_decref)
        let rc =
            unsafe { (self.api.store_get.unwrap())(self.store(ctx), c.as_ptr(), i.as_ptr(), &mut body, &mut version) };
        let body = Json::from_raw(body);
        if rc != 0 {
            return Err(rc);
        }
        match body {
            Some(b) => Ok((b, version)),
            None => Err(BNB_EIO),
        }
    }

    /// store_query with one string equality condition, ordered by `order_by`.
    /// Ok((rows, next cursor)).
    pub fn store_query_eq(
        &self,
        ctx: Ctx,
        coll: &str,
        field: &str,
        value: &str,
        order_by: &str,
        descending: bool,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Json, Option<String>), c_int> {
        let (c, f, v, o) = (cstr(coll), cstr(field), cstr(value), cstr(order_by));
        let cur = cursor.map(cstr);
        let cond = bnb_cond_t { field: f.as_ptr(), op: BNB_Q_EQ, str_: v.as_ptr(), num: 0 };
        let q = bnb_query_t {
            coll: c.as_ptr(),
            conds: &cond,
            nconds: 1,
            order_by: o.as_ptr(),
            descending: descending as c_int,
            limit,
            cursor: cur.as_ref().map_or(ptr::null(), |s| s.as_ptr()),
        };
        let mut items: *mut json_t = ptr::null_mut();
        let mut next: *mut c_char = ptr::null_mut();
        // SAFETY: q and its strings live for the call; *items is ours (json_decref), *next ours (free)
        let rc = unsafe { (self.api.store_query.unwrap())(self.store(ctx), &q, &mut items, &mut next) };
        let items = Json::from_raw(items);
        let next_s = if next.is_null() {
            None
        } else {
            // SAFETY: a NUL-terminated string malloc'ed by the host, freed right here
            let s = unsafe { CStr::from_ptr(next) }.to_string_lossy().into_owned();
            unsafe { free(next as *mut c_void) };
            Some(s)
        };
        if rc != 0 {
            return Err(rc);
        }
        match items {
            Some(i) => Ok((i, next_s)),
            None => Err(BNB_EIO),
        }
    }

    /// store_commit2 of a PUT of one document (no events, no claims).
    pub fn store_put(
        &self,
        ctx: Ctx,
        coll: &str,
        id: &str,
        expect_version: i64,
        body: &Json,
        applied_event_id: Option<&str>,
    ) -> c_int {
        let (c, i) = (cstr(coll), cstr(id));
        let ev = applied_event_id.map(cstr);
        let commit = bnb_commit_t {
            op: BNB_WRITE_PUT,
            coll: c.as_ptr(),
            id: i.as_ptr(),
            expect_version,
            body: body.p,
            events: ptr::null(),
            nevents: 0,
            applied_event_id: ev.as_ref().map_or(ptr::null(), |s| s.as_ptr()),
            set_claims: 0,
            claims: ptr::null(),
            nclaims: 0,
        };
        let mut nv: i64 = 0;
        // SAFETY: everything borrowed for the call
        unsafe { (self.api.store_commit2.unwrap())(self.store(ctx), &commit, &mut nv) }
    }
}

/// A handler's or the instance's context (valid only during the call that got it).
#[derive(Clone, Copy)]
pub struct Ctx(*mut bnb_ctx_t);

impl Ctx {
    pub fn from_raw(p: *mut bnb_ctx_t) -> Ctx {
        Ctx(p)
    }
}

/// One HTTP request being handled. Remembers whether it was answered, so
/// that a panic after the answer does not answer twice.
pub struct Req {
    p: *mut bnb_req_t,
    host: Host,
    answered: std::cell::Cell<bool>,
}

impl Req {
    pub fn new(host: Host, p: *mut bnb_req_t) -> Req {
        Req { p, host, answered: std::cell::Cell::new(false) }
    }
    pub fn answered(&self) -> bool {
        self.answered.get()
    }
    pub fn param(&self, name: &str) -> Option<String> {
        let n = cstr(name);
        // SAFETY: borrowed result, copied at once
        from_c(unsafe { (self.host.api.req_param.unwrap())(self.p, n.as_ptr()) }).map(|s| s.to_string())
    }
    pub fn query(&self, name: &str) -> Option<String> {
        let n = cstr(name);
        // SAFETY: as above
        from_c(unsafe { (self.host.api.req_query.unwrap())(self.p, n.as_ptr()) }).map(|s| s.to_string())
    }
    /// The raw query string (ABI 1.2), Some("") when the host has none to give.
    pub fn query_string(&self) -> Option<String> {
        if !self.host.has_query_string() {
            return None;
        }
        // SAFETY: present (checked); borrowed result, copied
        from_c(unsafe { (self.host.api.req_query_string.unwrap())(self.p) }).map(|s| s.to_string())
    }
    pub fn user(&self) -> Option<String> {
        // SAFETY: borrowed result, copied
        from_c(unsafe { (self.host.api.req_user.unwrap())(self.p) }).map(|s| s.to_string())
    }
    /// Answers with `body` (consumed: the host decrefs it).
    pub fn respond(&self, status: c_int, body: Json) {
        if self.answered.replace(true) {
            return;
        }
        // SAFETY: respond_json steals the reference
        unsafe { (self.host.api.respond_json.unwrap())(self.p, status, body.into_raw()) }
    }
    /// An application/problem+json answer.
    pub fn problem(&self, status: c_int, title: &str, detail: &str) {
        let mut p = match Json::object() {
            Some(p) => p,
            None => return,
        };
        let ok = p.set("type", Json::string("about:blank"))
            && p.set("title", Json::string(title))
            && p.set("status", Json::int(status as i64))
            && p.set("detail", Json::string(detail));
        if ok {
            self.respond(status, p);
        }
    }
}

/// Runs `body` catching any panic: a panic becomes `on_panic` instead of
/// unwinding into the host (undefined behaviour across extern "C").
pub fn guard<T, F: FnOnce() -> T>(on_panic: T, body: F) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(v) => v,
        Err(_) => on_panic,
    }
}

// ---- layout report for tests/plugins/notification/test_ffi_layout.c --------

macro_rules! layout {
    ($out:ident, $t:ty; $($f:ident),*) => {{
        let base = std::mem::MaybeUninit::<$t>::uninit();
        let b = base.as_ptr();
        $out.push(std::mem::size_of::<$t>());
        $(
            // SAFETY: only the address of the member is taken
            let f = unsafe { ptr::addr_of!((*b).$f) };
            $out.push(f as usize - b as usize);
        )*
    }};
}

/// Sizes and offsets in the order test_ffi_layout.c lists them: for each
/// struct its size then the offset of each member in declaration order.
pub fn layout() -> Vec<usize> {
    let mut v: Vec<usize> = Vec::new();
    layout!(v, json_t; type_, refcount);
    layout!(v, bnb_cfg_item_t; name, type_, default_value, help);
    layout!(v, bnb_write_t; op, coll, id, expect_version, body, key1, key2);
    layout!(v, bnb_event_out_t; topic, type_, subject, correlation_id, data);
    layout!(v, bnb_field_def_t; name, type_);
    layout!(v, bnb_index_def_t; fields, unique);
    layout!(v, bnb_coll_def_t; name, fields, nfields, indexes, nindexes);
    layout!(v, bnb_cond_t; field, op, str_, num);
    layout!(v, bnb_query_t; coll, conds, nconds, order_by, descending, limit, cursor);
    layout!(v, bnb_commit_t; op, coll, id, expect_version, body, events, nevents, applied_event_id, set_claims,
        claims, nclaims);
    layout!(v, bnb_plugin_t; abi_version, name, version, config, init, start, stop, fini);
    layout!(v, bnb_host_api_t; abi_version, size, route, subscribe, set_userdata, userdata, config, name,
        req_method, req_param, req_query, req_body, req_user, req_role, req_header, respond_json,
        respond_problem, respond_empty, respond_header, store, store_get, store_list, store_commit,
        event_reject, call, log, count, set_correlation, uuid, now_ms, store_define, store_query,
        store_commit2, req_query_string, stream_open, stream_write, stream_close, store_get_many);
    v.push(BNB_ABI_VERSION as usize);
    v
}

/// Fills `out` with up to `n` numbers of `layout()`; returns how many there are.
#[no_mangle]
pub unsafe extern "C" fn bnb_notification_ffi_layout(out: *mut usize, n: usize) -> usize {
    guard(0, || {
        let v = layout();
        if !out.is_null() {
            for (i, x) in v.iter().take(n).enumerate() {
                // SAFETY: the caller gives room for n numbers
                *out.add(i) = *x;
            }
        }
        v.len()
    })
}
