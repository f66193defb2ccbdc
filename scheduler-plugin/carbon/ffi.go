package carbon

// The one place that talks to the Rust policy (crates/carbon-kube-ffi)
// through cgo. Build the static library first:
//   cargo build --release -p carbon-kube-ffi
// CGO_LDFLAGS may point -L elsewhere when CARGO_TARGET_DIR is not ./target.

/*
#cgo CFLAGS: -I${SRCDIR}/../../crates/carbon-kube-ffi/include
#cgo LDFLAGS: -L${SRCDIR}/../../target/release -lcarbon_kube_ffi -ldl -lm -lpthread
#include <stdlib.h>
#include "carbon_kube_ffi.h"
*/
import "C"

import (
	"encoding/json"
	"errors"
	"runtime"
	"unsafe"
)

// zoneNotSeen is the zone handle of a node not resolved yet (neutral).
const zoneNotSeen uint32 = C.CK_ZONE_NOT_SEEN

// ckNode mirrors C's ck_node: the same layout, so a []ckNode is passed to
// Rust without copying.
type ckNode = C.ck_node

func newNode(zone uint32, allocCPU, allocMem, reqCPU, reqMem int64) ckNode {
	return ckNode{
		zone:                     C.uint32_t(zone),
		allocatable_cpu_millis:   C.int64_t(allocCPU),
		allocatable_memory_bytes: C.int64_t(allocMem),
		requested_cpu_millis:     C.int64_t(reqCPU),
		requested_memory_bytes:   C.int64_t(reqMem),
	}
}

// policy is the Rust policy handle.
type policy struct {
	h *C.ck_policy
}

// bytesArg is a Go byte slice as (pointer, length) for C. The bytes hold no
// Go pointers, so passing them is allowed by the cgo rules; C does not keep
// them after the call.
func bytesArg(b []byte) (*C.uint8_t, C.size_t) {
	if len(b) == 0 {
		return nil, 0
	}
	return (*C.uint8_t)(unsafe.Pointer(&b[0])), C.size_t(len(b))
}

func stringArg(s string) (*C.uint8_t, C.size_t) {
	if len(s) == 0 {
		return nil, 0
	}
	return (*C.uint8_t)(unsafe.Pointer(unsafe.StringData(s))), C.size_t(len(s))
}

// take copies a buffer returned by Rust and frees it.
func take(b C.ck_buf) []byte {
	if b.ptr == nil {
		return nil
	}
	out := C.GoBytes(unsafe.Pointer(b.ptr), C.int(b.len))
	C.ck_buf_free(b)
	return out
}

func result(rc C.int32_t, out C.ck_buf) ([]byte, error) {
	body := take(out)
	if rc != 0 {
		return nil, errors.New(string(body))
	}
	return body, nil
}

// newPolicy creates the handle from the plugin args (JSON).
func newPolicy(argsJSON []byte) (*policy, error) {
	var out C.ck_buf
	p, n := bytesArg(argsJSON)
	h := C.ck_policy_new(p, n, &out)
	body := take(out)
	if h == nil {
		return nil, errors.New(string(body))
	}
	pol := &policy{h: h}
	runtime.SetFinalizer(pol, func(p *policy) { C.ck_policy_free(p.h) })
	return pol, nil
}

type zoneValue struct {
	Zone    string  `json:"zone"`
	Source  string  `json:"source"`
	GPerKwh float64 `json:"gPerKwh"`
}

// setSnapshot replaces the snapshot (present false: the ConfigMap is absent).
func (p *policy) setSnapshot(snapshot []byte, present bool) (zones []zoneValue, ignored []string, err error) {
	var out C.ck_buf
	ptr, n := bytesArg(snapshot)
	if !present {
		ptr, n = nil, 0
	} else if ptr == nil {
		ptr, n = stringArg("{}")
	}
	body, err := result(C.ck_set_snapshot(p.h, ptr, n, &out), out)
	runtime.KeepAlive(snapshot)
	if err != nil {
		return nil, nil, err
	}
	var r struct {
		Ignored []string    `json:"ignored"`
		Records []zoneValue `json:"records"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, nil, err
	}
	return r.Records, r.Ignored, nil
}

// setConfig applies the carbon-kube-config data (nil: absent); returns the
// effective settings in raw form.
func (p *policy) setConfig(data map[string]string) (map[string]any, error) {
	var out C.ck_buf
	var ptr *C.uint8_t
	var n C.size_t
	var text []byte
	if data != nil {
		var err error
		if text, err = json.Marshal(data); err != nil {
			return nil, err
		}
		ptr, n = bytesArg(text)
	}
	body, err := result(C.ck_set_config(p.h, ptr, n, &out), out)
	runtime.KeepAlive(text)
	if err != nil {
		return nil, err
	}
	var effective map[string]any
	err = json.Unmarshal(body, &effective)
	return effective, err
}

type nodeInput struct {
	Name       string            `json:"name"`
	Labels     map[string]string `json:"labels,omitempty"`
	ProviderID string            `json:"providerId,omitempty"`
}

// nodeZone resolves a node's zone handle.
func (p *policy) nodeZone(name string, labels map[string]string, providerID string) uint32 {
	text, err := json.Marshal(nodeInput{Name: name, Labels: labels, ProviderID: providerID})
	if err != nil {
		return zoneNotSeen
	}
	ptr, n := bytesArg(text)
	z := uint32(C.ck_node_zone(p.h, ptr, n))
	runtime.KeepAlive(text)
	return z
}

type podInput struct {
	UID         string            `json:"uid"`
	Namespace   string            `json:"namespace"`
	Name        string            `json:"name"`
	Annotations map[string]string `json:"annotations,omitempty"`
	CPUMillis   int64             `json:"cpuMillis"`
	MemoryBytes int64             `json:"memoryBytes"`
}

type filterReport struct {
	Outcome          string   `json:"outcome"`
	Messages         []string `json:"messages"`
	Summary          string   `json:"summary"`
	AnnotationErrors []string `json:"annotationErrors"`
}

type scoreReport struct {
	Outcome string `json:"outcome"`
	Best    string `json:"best"`
}

type landingEvent struct {
	Reason string `json:"reason"`
	Note   string `json:"note"`
}

func nodesArg(nodes []ckNode) (*C.ck_node, C.size_t) {
	if len(nodes) == 0 {
		return nil, 0
	}
	return &nodes[0], C.size_t(len(nodes))
}

func flags(explain bool) C.uint32_t {
	if explain {
		return C.CK_EXPLAIN
	}
	return 0
}

// filter runs the policy's filter over every candidate at once; verdict 0
// passes, k > 0 fails with report.Messages[k-1]. report.Summary is only
// formatted when explain is set.
func (p *policy) filter(pod []byte, nodes []ckNode, now int64, explain bool) ([]uint32, filterReport, error) {
	verdicts := make([]uint32, len(nodes))
	var out C.ck_buf
	pp, pn := bytesArg(pod)
	np, nn := nodesArg(nodes)
	var vp *C.uint32_t
	if len(verdicts) > 0 {
		vp = (*C.uint32_t)(unsafe.Pointer(&verdicts[0]))
	}
	body, err := result(C.ck_filter(p.h, pp, pn, np, nn, C.int64_t(now), flags(explain), vp, &out), out)
	runtime.KeepAlive(pod)
	runtime.KeepAlive(nodes)
	var r filterReport
	if err != nil {
		return nil, r, err
	}
	err = json.Unmarshal(body, &r)
	return verdicts, r, err
}

// score runs the policy's scoring over every candidate at once (0-10 each);
// report.Best is only formatted when explain is set.
func (p *policy) score(pod []byte, nodes []ckNode, now int64, explain bool) ([]uint8, scoreReport, error) {
	scores := make([]uint8, len(nodes))
	var out C.ck_buf
	pp, pn := bytesArg(pod)
	np, nn := nodesArg(nodes)
	var sp *C.uint8_t
	if len(scores) > 0 {
		sp = (*C.uint8_t)(unsafe.Pointer(&scores[0]))
	}
	body, err := result(C.ck_score(p.h, pp, pn, np, nn, C.int64_t(now), flags(explain), sp, &out), out)
	runtime.KeepAlive(pod)
	runtime.KeepAlive(nodes)
	var r scoreReport
	if err != nil {
		return nil, r, err
	}
	err = json.Unmarshal(body, &r)
	return scores, r, err
}

// landing returns the Event to write for a bound pod, if carbon decided
// where it landed.
func (p *policy) landing(uid string, zone uint32) (*landingEvent, error) {
	var out C.ck_buf
	up, un := stringArg(uid)
	body, err := result(C.ck_landing(p.h, up, un, C.uint32_t(zone), &out), out)
	runtime.KeepAlive(uid)
	if err != nil || len(body) == 0 {
		return nil, err
	}
	var e landingEvent
	if err := json.Unmarshal(body, &e); err != nil {
		return nil, err
	}
	return &e, nil
}

// forget drops a pod's decision.
func (p *policy) forget(uid string) {
	up, un := stringArg(uid)
	C.ck_forget(p.h, up, un)
	runtime.KeepAlive(uid)
}
