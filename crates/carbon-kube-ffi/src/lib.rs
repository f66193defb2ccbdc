//! Carbon-Kube's placement policy behind a small C ABI, for the kube-scheduler
//! framework plugin in `scheduler-plugin/` (Go, cgo). The plugin makes one
//! call per pod per scheduling cycle for the filter ([`ck_filter`], every
//! candidate at once) and one for the scores ([`ck_score`]); the decisions
//! are `carbon-kube-policy`'s `filter_nodes` and `score_nodes`, the same
//! functions the extender calls. There is no second copy of the policy.
//!
//! What it does not do: no IO, no clock (the caller passes `now`), no
//! Kubernetes client. The plugin watches the ConfigMaps and hands their
//! content over with [`ck_set_snapshot`] and [`ck_set_config`], and resolves
//! each node's zone once, when the node changes, with [`ck_node_zone`].
//!
//! The ABI (see `include/carbon_kube_ffi.h`): strings and JSON go in as
//! pointer + length (UTF-8, not NUL-terminated); answers that are not plain
//! numbers come back as a [`CkBuf`] of JSON that the caller frees with
//! [`ck_buf_free`]. Functions return 0 on success and -1 on failure, with the
//! error message in the `CkBuf`. No panic crosses the boundary.
//!
//! The safe core is [`policy::Policy`]; Rust callers (tests, the parity
//! test with the extender) use it directly.

pub mod policy;

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

pub use policy::{CkNode, Policy, ZONE_NOT_SEEN};

/// An owned byte buffer handed to the caller; free it with [`ck_buf_free`].
#[repr(C)]
#[derive(Debug)]
pub struct CkBuf {
    /// Start of the bytes (null when empty).
    pub ptr: *mut u8,
    /// Number of bytes.
    pub len: usize,
}

impl CkBuf {
    const EMPTY: Self = Self {
        ptr: std::ptr::null_mut(),
        len: 0,
    };

    fn from_string(s: String) -> Self {
        let boxed = s.into_bytes().into_boxed_slice();
        let len = boxed.len();
        if len == 0 {
            return Self::EMPTY;
        }
        let ptr = Box::into_raw(boxed).cast::<u8>();
        Self { ptr, len }
    }
}

/// Result code: success.
pub const CK_OK: i32 = 0;
/// Result code: failure; the message is in the output buffer.
pub const CK_ERR: i32 = -1;

/// Flag of [`ck_filter`] and [`ck_score`]: also format the report's line
/// for the debug log (`summary`, `best`). Without it they stay empty, so a
/// scheduler that does not log them does not pay for them.
pub const CK_EXPLAIN: u32 = 1;

/// Reads `len` bytes at `ptr` as UTF-8 (`None` for a null pointer).
///
/// # Safety
/// `ptr` is null or points to `len` readable bytes that stay valid and
/// unchanged for `'a`.
unsafe fn str_arg<'a>(ptr: *const u8, len: usize) -> Result<Option<&'a str>, String> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller guarantees `len` readable bytes at a non-null `ptr`.
    let bytes = unsafe { std::slice::from_raw_parts(ptr, len) };
    std::str::from_utf8(bytes)
        .map(Some)
        .map_err(|e| format!("argument is not UTF-8: {e}"))
}

/// Writes `buf` to `out` if `out` is not null.
///
/// # Safety
/// `out` is null or points to a writable `CkBuf`.
unsafe fn put(out: *mut CkBuf, buf: CkBuf) {
    if out.is_null() {
        ck_buf_free(buf);
        return;
    }
    // SAFETY: the caller guarantees `out` is writable; the previous content is
    // not an owned buffer (callers pass a zeroed or consumed CkBuf).
    unsafe { out.write(buf) };
}

/// Runs `f`, turning an error or a panic into [`CK_ERR`] with the message in
/// `out`, and success into [`CK_OK`] with the JSON answer in `out`.
///
/// # Safety
/// `out` is null or points to a writable `CkBuf`.
unsafe fn run(out: *mut CkBuf, f: impl FnOnce() -> Result<String, String>) -> i32 {
    let (code, text) = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(json)) => (CK_OK, json),
        Ok(Err(message)) => (CK_ERR, message),
        Err(panic) => (
            CK_ERR,
            panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .map_or_else(
                    || "carbon-kube-ffi: internal panic".to_owned(),
                    |m| format!("carbon-kube-ffi: internal panic: {m}"),
                ),
        ),
    };
    // SAFETY: forwarded from this function's contract.
    unsafe { put(out, CkBuf::from_string(text)) };
    code
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, String> {
    serde_json::to_string(value).map_err(|e| e.to_string())
}

/// Frees a buffer returned by this library. Null buffers are ignored.
#[unsafe(no_mangle)]
pub extern "C" fn ck_buf_free(buf: CkBuf) {
    if buf.ptr.is_null() || buf.len == 0 {
        return;
    }
    let slice = std::ptr::slice_from_raw_parts_mut(buf.ptr, buf.len);
    // SAFETY: `ptr`/`len` came from `CkBuf::from_string`, i.e. from
    // `Box::into_raw` of a boxed slice of exactly `len` bytes, and the caller
    // frees each buffer once.
    drop(unsafe { Box::from_raw(slice) });
}

/// Creates a policy handle from the plugin args (JSON: `{"placement": {...},
/// "regionZones": {...}}`, see [`policy::PolicyArgs`]). Returns null and an
/// error message in `err` when the args are invalid. Free it with
/// [`ck_policy_free`].
///
/// # Safety
/// `args` is null or points to `args_len` readable bytes; `err` is null or
/// points to a writable `CkBuf`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ck_policy_new(
    args: *const u8,
    args_len: usize,
    err: *mut CkBuf,
) -> *mut Policy {
    let mut handle = std::ptr::null_mut();
    // SAFETY: `err` and `args` are forwarded from this function's contract.
    let code = unsafe {
        run(err, || {
            let text = str_arg(args, args_len)?;
            let policy = Policy::new(text.unwrap_or(""))?;
            handle = Box::into_raw(Box::new(policy));
            Ok(String::new())
        })
    };
    if code == CK_OK {
        handle
    } else {
        std::ptr::null_mut()
    }
}

/// Frees a policy handle. Null is ignored.
///
/// # Safety
/// `policy` is null or a handle from [`ck_policy_new`] not freed yet and not
/// in use by another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ck_policy_free(policy: *mut Policy) {
    if policy.is_null() {
        return;
    }
    // SAFETY: the handle came from `Box::into_raw` in `ck_policy_new` and is
    // freed once, by the caller's contract.
    drop(unsafe { Box::from_raw(policy) });
}

/// Borrows the handle.
///
/// # Safety
/// `policy` is null or a live handle from [`ck_policy_new`].
unsafe fn handle<'a>(policy: *const Policy) -> Result<&'a Policy, String> {
    // SAFETY: a non-null handle is live by the caller's contract; `Policy`
    // is `Sync` (locks inside), so shared references from several threads
    // are fine.
    unsafe { policy.as_ref() }.ok_or_else(|| "null policy handle".to_owned())
}

/// Replaces the carbon snapshot with the snapshot ConfigMap's JSON (null:
/// the ConfigMap is absent, so carbon is not applied). On success `out` holds
/// `{"zones": n, "ignored": [...]}`; on failure the previous snapshot stays.
///
/// # Safety
/// `policy` is a live handle; `json` is null or points to `len` readable
/// bytes; `out` is null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ck_set_snapshot(
    policy: *const Policy,
    json: *const u8,
    len: usize,
    out: *mut CkBuf,
) -> i32 {
    // SAFETY: pointers are forwarded from this function's contract.
    unsafe {
        run(out, || {
            let p = handle(policy)?;
            let text = str_arg(json, len)?;
            to_json(&p.set_snapshot(text)?)
        })
    }
}

/// Applies the `carbon-kube-config` ConfigMap's data (a JSON object of
/// strings, as in the ConfigMap; null: absent) over the plugin args. A bad
/// override is rejected whole (the error names every field) and the previous
/// settings stay.
///
/// # Safety
/// As [`ck_set_snapshot`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ck_set_config(
    policy: *const Policy,
    json: *const u8,
    len: usize,
    out: *mut CkBuf,
) -> i32 {
    // SAFETY: pointers are forwarded from this function's contract.
    unsafe {
        run(out, || {
            let p = handle(policy)?;
            let data: Option<BTreeMap<String, String>> = match str_arg(json, len)? {
                None => None,
                Some(t) => Some(serde_json::from_str(t).map_err(|e| {
                    format!("ConfigMap carbon-kube-config: data is not a map of strings: {e}")
                })?),
            };
            p.set_config(data.as_ref())?;
            to_json(&p.config().to_raw())
        })
    }
}

/// Resolves a node's grid zone from `{"name", "labels", "providerId"}` and
/// returns its zone handle (≥ 1), or [`ZONE_NOT_SEEN`] (neutral) when the
/// input is unreadable. Call it when a node is added or its labels change.
///
/// # Safety
/// `policy` is a live handle; `json` points to `len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ck_node_zone(policy: *const Policy, json: *const u8, len: usize) -> u32 {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: pointers are forwarded from this function's contract.
        let (p, text) = unsafe { (handle(policy).ok()?, str_arg(json, len).ok()??) };
        let node: policy::NodeInput = serde_json::from_str(text).ok()?;
        Some(p.node_zone(&node))
    }))
    .ok()
    .flatten()
    .unwrap_or(ZONE_NOT_SEEN)
}

/// Borrows `n` nodes and `n` output slots.
///
/// # Safety
/// `nodes` points to `n` readable `CkNode`s and `slots` to `n` writable `T`s
/// (both may be null when `n` is 0), valid and not aliased for `'a`.
unsafe fn arrays<'a, T>(
    nodes: *const CkNode,
    slots: *mut T,
    n: usize,
) -> Result<(&'a [CkNode], &'a mut [T]), String> {
    if n == 0 {
        return Ok((&[], &mut []));
    }
    if nodes.is_null() || slots.is_null() {
        return Err("null node or output array".into());
    }
    // SAFETY: non-null, `n` elements each, not aliased (caller's contract).
    unsafe {
        Ok((
            std::slice::from_raw_parts(nodes, n),
            std::slice::from_raw_parts_mut(slots, n),
        ))
    }
}

fn pod_arg(text: Option<&str>) -> Result<policy::PodInput, String> {
    serde_json::from_str(text.unwrap_or("{}")).map_err(|e| format!("pod: {e}"))
}

/// The filter for one pod over all `n` candidates: `verdicts[i]` is 0 when
/// node `i` passes, `k > 0` when it fails with message `k - 1` of the report.
/// `out` gets the report JSON (`outcome`, `messages`, `summary`,
/// `annotationErrors`). `pod` is JSON `{"uid", "namespace", "name",
/// "annotations", "cpuMillis", "memoryBytes"}`; `now` is Unix seconds;
/// `flags` is 0 or [`CK_EXPLAIN`] (`summary` is empty without it).
///
/// # Safety
/// `policy` is a live handle; `pod` points to `pod_len` readable bytes;
/// `nodes` to `n` `CkNode`s and `verdicts` to `n` writable `u32`s; `out` is
/// null or writable.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn ck_filter(
    policy: *const Policy,
    pod: *const u8,
    pod_len: usize,
    nodes: *const CkNode,
    n: usize,
    now: i64,
    flags: u32,
    verdicts: *mut u32,
    out: *mut CkBuf,
) -> i32 {
    // SAFETY: pointers are forwarded from this function's contract.
    unsafe {
        run(out, || {
            let p = handle(policy)?;
            let pod = pod_arg(str_arg(pod, pod_len)?)?;
            let (nodes, verdicts) = arrays(nodes, verdicts, n)?;
            let explain = flags & CK_EXPLAIN != 0;
            to_json(&p.filter_explaining(&pod, nodes, now, verdicts, explain)?)
        })
    }
}

/// The scores (0–10) for one pod over all `n` candidates into `scores`.
/// `out` gets `{"outcome", "best"}` (`best` is empty without
/// [`CK_EXPLAIN`] in `flags`).
///
/// # Safety
/// As [`ck_filter`], with `scores` pointing to `n` writable bytes.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn ck_score(
    policy: *const Policy,
    pod: *const u8,
    pod_len: usize,
    nodes: *const CkNode,
    n: usize,
    now: i64,
    flags: u32,
    scores: *mut u8,
    out: *mut CkBuf,
) -> i32 {
    // SAFETY: pointers are forwarded from this function's contract.
    unsafe {
        run(out, || {
            let p = handle(policy)?;
            let pod = pod_arg(str_arg(pod, pod_len)?)?;
            let (nodes, scores) = arrays(nodes, scores, n)?;
            let explain = flags & CK_EXPLAIN != 0;
            to_json(&p.score_explaining(&pod, nodes, now, scores, explain)?)
        })
    }
}

/// After the pod `uid` is bound to a node of zone handle `zone`: `out` gets
/// `{"reason", "note"}` when carbon decided where it landed, or is left empty
/// (`len` 0). The pod's decision is forgotten either way.
///
/// # Safety
/// `policy` is a live handle; `uid` points to `uid_len` readable bytes; `out`
/// is null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ck_landing(
    policy: *const Policy,
    uid: *const u8,
    uid_len: usize,
    zone: u32,
    out: *mut CkBuf,
) -> i32 {
    // SAFETY: pointers are forwarded from this function's contract.
    unsafe {
        run(out, || {
            let p = handle(policy)?;
            let uid = str_arg(uid, uid_len)?.unwrap_or("");
            match p.landing(uid, zone) {
                Some(e) => to_json(&e),
                None => Ok(String::new()),
            }
        })
    }
}

/// Forgets the pod `uid`'s decision (it failed to bind or was deleted).
///
/// # Safety
/// `policy` is a live handle; `uid` points to `uid_len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ck_forget(policy: *const Policy, uid: *const u8, uid_len: usize) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: pointers are forwarded from this function's contract.
        if let (Ok(p), Ok(Some(uid))) = unsafe { (handle(policy), str_arg(uid, uid_len)) } {
            p.forget(uid);
        }
    }));
}

#[cfg(test)]
mod tests;
