// Package carbon is Carbon-Kube's kube-scheduler framework plugin: the
// carbon threshold filter and the carbon/free-capacity score inside
// kube-scheduler, with every decision made by the Rust policy crate
// (crates/carbon-kube-policy) through crates/carbon-kube-ffi. This package
// only gathers inputs, calls the policy once per pod per extension point and
// hands the answers to the framework.
//
// Extension points:
//   - PreFilter: one policy filter call per pod over the candidate zones
//     (see candidates below); the per-zone answer goes into CycleState.
//   - Filter: reads it; a node in a zone above the threshold is
//     UnschedulableAndUnresolvable with the policy's reason.
//   - PreScore: one policy score call over the feasible nodes; Score reads it
//     (0-10 from the policy, times 10: the framework's 0-100 range, the same
//     scaling kube-scheduler gives extender scores).
//   - PostBind: the CarbonAwarePlacement / CarbonThresholdFailedOpen Event.
//   - Unreserve: forgets the pod's decision.
package carbon

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"
	resourcehelper "k8s.io/component-helpers/resource"
	corev1helpers "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
	"k8s.io/klog/v2"
	fwk "k8s.io/kube-scheduler/framework"
	frameworkruntime "k8s.io/kubernetes/pkg/scheduler/framework/runtime"
)

// Name is the plugin's name in the KubeSchedulerConfiguration.
const Name = "CarbonKube"

// annotationPrefix: the pod annotations the policy reads.
const annotationPrefix = "carbon-kube.io/"

const stateKey fwk.StateKey = Name

// Plugin is the framework plugin.
type Plugin struct {
	handle fwk.Handle
	policy *policy
	now    func() time.Time
	// generation counts the snapshot and settings changes; it is part of
	// the pod signature (SignPod), so a change ends a batch.
	generation atomic.Uint64

	mu sync.RWMutex
	// zoneOf is each node's zone handle, resolved when the node changes.
	zoneOf map[string]nodeZone
	// nodesInZone counts nodes per zone handle.
	nodesInZone map[uint32]int
	// published is a read-only copy of zoneOf's handles that Filter, Score
	// and PreScore read without a lock (one atomic load per call, then a
	// map read): a lock taken by 16 parallel Filter calls per node cost
	// more than the lookup itself. dirty says zoneOf changed since;
	// publish() copies it again (once per pod at most, and only after a
	// node was added, removed or changed zone labels).
	published atomic.Pointer[map[string]uint32]
	dirty     atomic.Bool
}

type nodeZone struct {
	handle     uint32
	labels     map[string]string
	providerID string
}

var (
	_ fwk.PreFilterPlugin = (*Plugin)(nil)
	_ fwk.FilterPlugin    = (*Plugin)(nil)
	_ fwk.PreScorePlugin  = (*Plugin)(nil)
	_ fwk.ScorePlugin     = (*Plugin)(nil)
	_ fwk.ReservePlugin   = (*Plugin)(nil)
	_ fwk.PostBindPlugin  = (*Plugin)(nil)
	_ fwk.SignPlugin      = (*Plugin)(nil)
)

// New is the plugin factory for app.WithPlugin.
func New(ctx context.Context, obj runtime.Object, h fwk.Handle) (fwk.Plugin, error) {
	args := Args{}
	if obj != nil {
		if err := frameworkruntime.DecodeInto(obj, &args); err != nil {
			return nil, fmt.Errorf("%s args: %w", Name, err)
		}
	}
	args.defaults()
	p, err := newPlugin(args, h)
	if err != nil {
		return nil, err
	}
	if h != nil && h.SharedInformerFactory() != nil {
		p.watchNodes(h.SharedInformerFactory().Core().V1().Nodes().Informer())
	}
	if h != nil && h.ClientSet() != nil {
		if err := p.watchConfigMaps(ctx, h.ClientSet(), args.Namespace); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func newPlugin(args Args, h fwk.Handle) (*Plugin, error) {
	text, err := args.policyJSON()
	if err != nil {
		return nil, err
	}
	pol, err := newPolicy(text)
	if err != nil {
		return nil, fmt.Errorf("%s: %s", Name, err)
	}
	registerMetrics()
	if eff, err := pol.setConfig(nil); err == nil {
		observeSettings(eff)
	}
	return &Plugin{
		handle:      h,
		policy:      pol,
		now:         time.Now,
		zoneOf:      map[string]nodeZone{},
		nodesInZone: map[uint32]int{},
	}, nil
}

// Name returns the plugin's name.
func (p *Plugin) Name() string { return Name }

// SignPod lets kube-scheduler's opportunistic batching (KEP-5598) reuse
// one pod's filter and score results for the next identical pods, as it does
// for the stock plugins; a plugin that does not sign turns batching off for
// every pod. Two pods with the same fragment get the same carbon decision
// over the same nodes: it holds everything of the pod the policy reads (its
// carbon-kube.io/ annotations, its CPU and memory requests) and the
// generation of the snapshot and settings, so a snapshot or
// carbon-kube-config change ends the batch. Within a batch (at most 0.5 s,
// kube-scheduler's limit) the carbon filter still runs for every pod
// (PreFilter, and Filter on the hinted node).
func (p *Plugin) SignPod(_ context.Context, pod *v1.Pod) ([]fwk.SignFragment, *fwk.Status) {
	var ann []string
	for k, v := range pod.Annotations {
		if strings.HasPrefix(k, annotationPrefix) {
			ann = append(ann, k+"="+v)
		}
	}
	sort.Strings(ann)
	req := resourcehelper.PodRequests(pod, resourcehelper.PodResourcesOptions{})
	return []fwk.SignFragment{{
		Key: Name,
		Value: podSignature{
			Annotations: ann,
			CPUMillis:   req.Cpu().MilliValue(),
			MemoryBytes: req.Memory().Value(),
			Generation:  p.generation.Load(),
		},
	}}, nil
}

// podSignature is the plugin's part of the pod signature (JSON-encoded by
// the framework).
type podSignature struct {
	Annotations []string `json:"a,omitempty"`
	CPUMillis   int64    `json:"c"`
	MemoryBytes int64    `json:"m"`
	Generation  uint64   `json:"g"`
}

// --- nodes ---------------------------------------------------------------

func (p *Plugin) watchNodes(inf cache.SharedIndexInformer) {
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { p.upsertNode(obj) },
		UpdateFunc: func(_, obj any) { p.upsertNode(obj) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if n, ok := obj.(*v1.Node); ok {
				p.removeNode(n.Name)
			}
		},
	})
}

func sameLabels(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func (p *Plugin) upsertNode(obj any) {
	n, ok := obj.(*v1.Node)
	if !ok {
		return
	}
	p.zoneHandle(n)
}

// zoneHandle returns the node's zone handle, resolving it (once per change
// of labels or provider id) through the policy.
func (p *Plugin) zoneHandle(n *v1.Node) uint32 {
	p.mu.RLock()
	z, ok := p.zoneOf[n.Name]
	p.mu.RUnlock()
	if ok && z.providerID == n.Spec.ProviderID && sameLabels(z.labels, n.Labels) {
		return z.handle
	}
	h := p.policy.nodeZone(n.Name, n.Labels, n.Spec.ProviderID)
	p.mu.Lock()
	if old, ok := p.zoneOf[n.Name]; ok {
		p.nodesInZone[old.handle]--
		if p.nodesInZone[old.handle] <= 0 {
			delete(p.nodesInZone, old.handle)
		}
	}
	p.zoneOf[n.Name] = nodeZone{handle: h, labels: n.Labels, providerID: n.Spec.ProviderID}
	p.nodesInZone[h]++
	p.dirty.Store(true)
	p.mu.Unlock()
	return h
}

// publish refreshes the lock-free copy of the zone index if nodes changed.
func (p *Plugin) publish() {
	if !p.dirty.Load() {
		return
	}
	p.mu.RLock()
	p.dirty.Store(false)
	m := make(map[string]uint32, len(p.zoneOf))
	for name, z := range p.zoneOf {
		m[name] = z.handle
	}
	p.mu.RUnlock()
	p.published.Store(&m)
}

func (p *Plugin) removeNode(name string) {
	p.mu.Lock()
	if old, ok := p.zoneOf[name]; ok {
		p.nodesInZone[old.handle]--
		if p.nodesInZone[old.handle] <= 0 {
			delete(p.nodesInZone, old.handle)
		}
		delete(p.zoneOf, name)
		p.dirty.Store(true)
	}
	p.mu.Unlock()
}

// knownZone is the handle of a node already resolved (no cgo call), or
// zoneNotSeen: from the published copy without a lock, else (a node added
// since the last publish) from the index itself.
func (p *Plugin) knownZone(name string) (uint32, bool) {
	if m := p.published.Load(); m != nil {
		if h, ok := (*m)[name]; ok {
			return h, true
		}
	}
	p.mu.RLock()
	z, ok := p.zoneOf[name]
	p.mu.RUnlock()
	return z.handle, ok
}

// --- the per-pod state -----------------------------------------------------

type cycleState struct {
	pod []byte
	// verdict per zone handle (index): 0 passes, k > 0 fails with
	// messages[k-1]. Handles beyond the slice (zones without a candidate)
	// pass.
	verdict []uint32
	// messages are the policy's failure messages, one per failing zone,
	// formatted once per pod (not per node).
	messages []string
	// scores per node name, 0-10, after PreScore.
	scores map[string]int64
}

// Clone is not needed to copy: the state is read-only after PreFilter /
// PreScore (preemption's what-if runs do not change it).
func (s *cycleState) Clone() fwk.StateData { return s }

func readState(cs fwk.CycleState) (*cycleState, bool) {
	d, err := cs.Read(stateKey)
	if err != nil {
		return nil, false
	}
	s, ok := d.(*cycleState)
	return s, ok
}

func podJSON(pod *v1.Pod) ([]byte, podInput) {
	in := podInput{UID: string(pod.UID), Namespace: pod.Namespace, Name: pod.Name}
	for k, v := range pod.Annotations {
		if strings.HasPrefix(k, annotationPrefix) {
			if in.Annotations == nil {
				in.Annotations = map[string]string{}
			}
			in.Annotations[k] = v
		}
	}
	req := resourcehelper.PodRequests(pod, resourcehelper.PodResourcesOptions{})
	in.CPUMillis = req.Cpu().MilliValue()
	in.MemoryBytes = req.Memory().Value()
	text, _ := json.Marshal(in)
	return text, in
}

// couldHost: whether the node passes the pod's hard placement constraints
// (required node affinity and node selector, NoSchedule/NoExecute taints)
// and has room for its CPU, memory and one more pod. Only these nodes are
// the carbon filter's candidates, as the extender only sees the nodes that
// passed kube-scheduler's filters (docs/scheduler-plugin.md says what differs).
func couldHost(pod *v1.Pod, aff nodeaffinity.RequiredNodeAffinity, cpu, mem int64, ni fwk.NodeInfo) bool {
	n := ni.Node()
	if n == nil {
		return false
	}
	if ok, _ := aff.Match(n); !ok {
		return false
	}
	if _, untolerated := corev1helpers.FindMatchingUntoleratedTaint(klog.Background(), n.Spec.Taints, pod.Spec.Tolerations, func(t *v1.Taint) bool {
		return t.Effect == v1.TaintEffectNoSchedule || t.Effect == v1.TaintEffectNoExecute
	}, false); untolerated {
		return false
	}
	alloc, req := ni.GetAllocatable(), ni.GetRequested()
	if alloc.GetAllowedPodNumber() > 0 && len(ni.GetPods())+1 > alloc.GetAllowedPodNumber() {
		return false
	}
	return req.GetMilliCPU()+cpu <= alloc.GetMilliCPU() && req.GetMemory()+mem <= alloc.GetMemory()
}

// PreFilter asks the policy once which zones the pod may use.
//
// The policy's filter decides per zone (every node of a zone gets the same
// verdict), so the candidates are one representative per zone among the
// nodes that could host the pod: the same decision as over every node, at
// the cost of the zones, not the nodes.
func (p *Plugin) PreFilter(ctx context.Context, cs fwk.CycleState, pod *v1.Pod, nodes []fwk.NodeInfo) (*fwk.PreFilterResult, *fwk.Status) {
	start := time.Now()
	p.publish()
	text, in := podJSON(pod)
	s := &cycleState{pod: text}
	aff := nodeaffinity.GetRequiredNodeAffinity(pod)
	p.mu.RLock()
	zonesInUse := len(p.nodesInZone)
	p.mu.RUnlock()
	seen := make(map[uint32]struct{}, 16)
	var reps []ckNode
	for _, ni := range nodes {
		n := ni.Node()
		if n == nil {
			continue
		}
		h, ok := p.knownZone(n.Name)
		if !ok {
			h = p.zoneHandle(n)
		}
		if _, done := seen[h]; done {
			continue
		}
		if !couldHost(pod, aff, in.CPUMillis, in.MemoryBytes, ni) {
			continue
		}
		seen[h] = struct{}{}
		reps = append(reps, newNode(h, 0, 0, 0, 0))
		if ok && len(seen) >= zonesInUse {
			break // every zone in use has a candidate
		}
	}
	logger := klog.FromContext(ctx)
	explain := logger.V(4).Enabled()
	verdicts, report, err := p.policy.filter(s.pod, reps, p.now().Unix(), explain)
	observe("filter", start)
	if err != nil {
		decisions.WithLabelValues("filter", "error").Inc()
		klog.FromContext(ctx).Error(err, "carbon policy filter failed; scheduling without carbon", "pod", klog.KObj(pod))
		return nil, fwk.NewStatus(fwk.Skip)
	}
	decisions.WithLabelValues("filter", report.Outcome).Inc()
	for _, e := range report.AnnotationErrors {
		logger.Info(e, "pod", klog.KObj(pod))
	}
	if explain {
		logger.V(4).Info("carbon filter", "pod", klog.KObj(pod), "decision", report.Summary)
	}
	for i, r := range reps {
		k := verdicts[i]
		if k == 0 || int(k) > len(report.Messages) {
			continue
		}
		h := int(r.zone)
		for len(s.verdict) <= h {
			s.verdict = append(s.verdict, 0)
		}
		s.verdict[h] = k
	}
	s.messages = report.Messages
	cs.Write(stateKey, s)
	return nil, nil
}

// PreFilterExtensions: none (the decision does not depend on other pods).
func (p *Plugin) PreFilterExtensions() fwk.PreFilterExtensions { return nil }

// Filter reads the PreFilter answer for the node's zone.
func (p *Plugin) Filter(_ context.Context, cs fwk.CycleState, _ *v1.Pod, ni fwk.NodeInfo) *fwk.Status {
	s, ok := readState(cs)
	if !ok || ni.Node() == nil {
		return nil
	}
	if len(s.verdict) == 0 {
		return nil // every zone passes
	}
	h, ok := p.knownZone(ni.Node().Name)
	if !ok || int(h) >= len(s.verdict) {
		return nil // not resolved yet, or no verdict: neutral
	}
	k := s.verdict[h]
	if k == 0 || int(k) > len(s.messages) {
		return nil
	}
	// A new Status per node: the framework sets its plugin name, in
	// parallel for several nodes.
	return fwk.NewStatus(fwk.UnschedulableAndUnresolvable, s.messages[k-1])
}

// PreScore asks the policy once for the scores of every feasible node.
func (p *Plugin) PreScore(ctx context.Context, cs fwk.CycleState, pod *v1.Pod, nodes []fwk.NodeInfo) *fwk.Status {
	start := time.Now()
	p.publish()
	s, ok := readState(cs)
	if !ok {
		text, _ := podJSON(pod)
		s = &cycleState{pod: text}
		cs.Write(stateKey, s)
	}
	cands := make([]ckNode, 0, len(nodes))
	names := make([]string, 0, len(nodes))
	for _, ni := range nodes {
		n := ni.Node()
		if n == nil {
			continue
		}
		h, ok := p.knownZone(n.Name)
		if !ok {
			h = p.zoneHandle(n)
		}
		alloc, req := ni.GetAllocatable(), ni.GetRequested()
		cands = append(cands, newNode(h, alloc.GetMilliCPU(), alloc.GetMemory(), req.GetMilliCPU(), req.GetMemory()))
		names = append(names, n.Name)
	}
	logger := klog.FromContext(ctx)
	explain := logger.V(4).Enabled()
	scores, report, err := p.policy.score(s.pod, cands, p.now().Unix(), explain)
	observe("prioritize", start)
	if err != nil {
		decisions.WithLabelValues("prioritize", "error").Inc()
		logger.Error(err, "carbon policy score failed; scoring without carbon", "pod", klog.KObj(pod))
		return fwk.NewStatus(fwk.Skip)
	}
	decisions.WithLabelValues("prioritize", report.Outcome).Inc()
	if explain {
		logger.V(4).Info("carbon scores", "pod", klog.KObj(pod), "nodes", len(cands), "best", report.Best)
	}
	// A new state rather than a write to the shared one: batching's
	// rescoring runs PreScore on a clone of the cycle state.
	next := *s
	next.scores = make(map[string]int64, len(names))
	for i, name := range names {
		next.scores[name] = int64(scores[i])
	}
	cs.Write(stateKey, &next)
	return nil
}

// Score returns the policy's score (0-10) times 10.
func (p *Plugin) Score(_ context.Context, cs fwk.CycleState, _ *v1.Pod, ni fwk.NodeInfo) (int64, *fwk.Status) {
	s, ok := readState(cs)
	if !ok || ni.Node() == nil {
		return 0, nil
	}
	return s.scores[ni.Node().Name] * (fwk.MaxNodeScore / 10), nil
}

// ScoreExtensions: none; scores are already in the framework's range.
func (p *Plugin) ScoreExtensions() fwk.ScoreExtensions { return nil }

// Reserve does nothing; Unreserve forgets the decision.
func (p *Plugin) Reserve(context.Context, fwk.CycleState, *v1.Pod, string) *fwk.Status {
	return nil
}

// Unreserve forgets the pod's decision (binding failed).
func (p *Plugin) Unreserve(_ context.Context, _ fwk.CycleState, pod *v1.Pod, _ string) {
	p.policy.forget(string(pod.UID))
}

// PostBind writes the Event saying where carbon sent the pod, when it did.
func (p *Plugin) PostBind(ctx context.Context, _ fwk.CycleState, pod *v1.Pod, nodeName string) {
	h, _ := p.knownZone(nodeName)
	ev, err := p.policy.landing(string(pod.UID), h)
	if err != nil || ev == nil {
		return
	}
	note := fmt.Sprintf("%s (node %s)", ev.Note, nodeName)
	klog.FromContext(ctx).Info(note, "pod", klog.KObj(pod), "reason", ev.Reason)
	if p.handle != nil && p.handle.EventRecorder() != nil {
		p.handle.EventRecorder().Eventf(pod, nil, v1.EventTypeNormal, ev.Reason, "Scheduling", "%s", note)
		events.WithLabelValues("recorded").Inc()
	}
}
