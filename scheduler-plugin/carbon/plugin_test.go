package carbon

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	fwk "k8s.io/kube-scheduler/framework"
	"k8s.io/kubernetes/pkg/scheduler/framework"
)

const zoneLabel = "carbon-kube.io/grid-zone"

// now is a fixed decision time; snapshots are a minute older.
var now = time.Unix(1_700_000_000, 0)

func snapshotJSON(values map[string]float64, age time.Duration) []byte {
	zones := map[string]any{}
	for z, v := range values {
		zones[z] = map[string]any{
			"carbon_intensity": v,
			"timestamp":        now.Add(-age).Unix(),
			"source":           "electricity_maps",
		}
	}
	text, _ := json.Marshal(zones)
	return text
}

func node(name, zone string, cpuMillis int64) *framework.NodeInfo {
	n := &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}},
		Status: v1.NodeStatus{Allocatable: v1.ResourceList{
			v1.ResourceCPU:    *resource.NewMilliQuantity(cpuMillis, resource.DecimalSI),
			v1.ResourceMemory: *resource.NewQuantity(16<<30, resource.BinarySI),
			v1.ResourcePods:   *resource.NewQuantity(110, resource.DecimalSI),
		}},
	}
	if zone != "" {
		n.Labels[zoneLabel] = zone
	}
	ni := framework.NewNodeInfo()
	ni.SetNode(n)
	return ni
}

func pod(name string, annotations map[string]string) *v1.Pod {
	return &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: types.UID("uid-" + name), Annotations: annotations},
		Spec: v1.PodSpec{Containers: []v1.Container{{
			Name: "c",
			Resources: v1.ResourceRequirements{Requests: v1.ResourceList{
				v1.ResourceCPU:    resource.MustParse("500m"),
				v1.ResourceMemory: resource.MustParse("256Mi"),
			}},
		}}},
	}
}

func newTestPlugin(t *testing.T, args Args) *Plugin {
	t.Helper()
	p, err := newPlugin(args, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.now = func() time.Time { return now }
	return p
}

func fleet() []fwk.NodeInfo {
	return []fwk.NodeInfo{
		node("gb-0", "GB", 2000),
		node("de-0", "DE", 8000),
		node("de-1", "DE", 1000),
		node("tx-0", "US-TEX-ERCO", 8000),
		node("nowhere", "", 8000),
	}
}

// decide runs the plugin's extension points as the framework does and
// returns the filter status per node and the scores of the feasible ones.
func decide(t *testing.T, p *Plugin, pd *v1.Pod, nodes []fwk.NodeInfo) (map[string]*fwk.Status, map[string]int64) {
	t.Helper()
	ctx := context.Background()
	cs := framework.NewCycleState()
	if _, st := p.PreFilter(ctx, cs, pd, nodes); !st.IsSuccess() {
		t.Fatalf("PreFilter: %v", st)
	}
	statuses := map[string]*fwk.Status{}
	var feasible []fwk.NodeInfo
	for _, ni := range nodes {
		st := p.Filter(ctx, cs, pd, ni)
		statuses[ni.Node().Name] = st
		if st.IsSuccess() {
			feasible = append(feasible, ni)
		}
	}
	if st := p.PreScore(ctx, cs, pd, feasible); !st.IsSuccess() {
		t.Fatalf("PreScore: %v", st)
	}
	scores := map[string]int64{}
	for _, ni := range feasible {
		s, st := p.Score(ctx, cs, pd, ni)
		if !st.IsSuccess() {
			t.Fatalf("Score: %v", st)
		}
		scores[ni.Node().Name] = s
	}
	return statuses, scores
}

func TestThresholdFiltersDirtyZonesAndScoresTheCleanestHighest(t *testing.T) {
	p := newTestPlugin(t, Args{})
	if _, _, err := p.policy.setSnapshot(snapshotJSON(map[string]float64{"GB": 90, "DE": 210, "US-TEX-ERCO": 410}, time.Minute), true); err != nil {
		t.Fatal(err)
	}
	statuses, scores := decide(t, p, pod("p", nil), fleet())
	st := statuses["tx-0"]
	if st.Code() != fwk.UnschedulableAndUnresolvable || !strings.Contains(st.Message(), "zone US-TEX-ERCO at 410 g/kWh") || !strings.Contains(st.Message(), "above the threshold of 250 g/kWh") {
		t.Fatalf("tx-0: %v", st)
	}
	for _, n := range []string{"gb-0", "de-0", "de-1", "nowhere"} {
		if !statuses[n].IsSuccess() {
			t.Fatalf("%s: %v", n, statuses[n])
		}
	}
	if !(scores["gb-0"] > scores["de-0"] && scores["de-0"] > scores["de-1"]) {
		t.Fatalf("GB, then the roomier DE node: %v", scores)
	}
	for n, s := range scores {
		if s < 0 || s > fwk.MaxNodeScore || s%10 != 0 {
			t.Fatalf("%s: score %d is not the policy's 0-10 times 10", n, s)
		}
	}
}

func TestPodThresholdOptOutAndFailOpen(t *testing.T) {
	p := newTestPlugin(t, Args{})
	if _, _, err := p.policy.setSnapshot(snapshotJSON(map[string]float64{"GB": 330, "DE": 300, "US-TEX-ERCO": 410}, time.Minute), true); err != nil {
		t.Fatal(err)
	}
	nodes := fleet()[:4] // no zone-less node: every zone is dirty
	// Fail open (default): all pass.
	statuses, _ := decide(t, p, pod("a", nil), nodes)
	for n, st := range statuses {
		if !st.IsSuccess() {
			t.Fatalf("fail open: %s: %v", n, st)
		}
	}
	// The pod's own threshold lets DE through only.
	statuses, _ = decide(t, p, pod("b", map[string]string{"carbon-kube.io/max-intensity": "310"}), nodes)
	if !statuses["de-0"].IsSuccess() || statuses["gb-0"].IsSuccess() || statuses["tx-0"].IsSuccess() {
		t.Fatalf("pod threshold: %v", statuses)
	}
	if !strings.Contains(statuses["gb-0"].Message(), "set by the pod's carbon-kube.io/max-intensity") {
		t.Fatal(statuses["gb-0"].Message())
	}
	// Reject via the ConfigMap: every node fails, and says so.
	if _, err := p.policy.setConfig(map[string]string{"onNoGreenNode": "reject"}); err != nil {
		t.Fatal(err)
	}
	statuses, _ = decide(t, p, pod("c", nil), nodes)
	for n, st := range statuses {
		if st.IsSuccess() || !strings.Contains(st.Message(), "onNoGreenNode: reject") {
			t.Fatalf("reject: %s: %v", n, st)
		}
	}
	// Opted out: nothing filtered, every score 0.
	statuses, scores := decide(t, p, pod("d", map[string]string{"carbon-kube.io/opt-out": "true"}), nodes)
	for n, st := range statuses {
		if !st.IsSuccess() || scores[n] != 0 {
			t.Fatalf("opt-out: %s: %v %d", n, st, scores[n])
		}
	}
	// A bad override is rejected whole and the previous settings stay.
	if _, err := p.policy.setConfig(map[string]string{"carbonWeight": "lots"}); err == nil || !strings.Contains(err.Error(), "carbonWeight") {
		t.Fatalf("bad override: %v", err)
	}
}

func TestStaleOrMissingDataIsNeutral(t *testing.T) {
	p := newTestPlugin(t, Args{OnNoGreenNode: "reject"})
	for name, set := range map[string]func(){
		"stale": func() {
			_, _, _ = p.policy.setSnapshot(snapshotJSON(map[string]float64{"GB": 330, "DE": 300, "US-TEX-ERCO": 410}, 2*time.Hour), true)
		},
		"absent": func() { _, _, _ = p.policy.setSnapshot(nil, false) },
	} {
		set()
		statuses, scores := decide(t, p, pod("p-"+name, nil), fleet())
		for n, st := range statuses {
			if !st.IsSuccess() || scores[n] != 0 {
				t.Fatalf("%s: %s: %v %d", name, n, st, scores[n])
			}
		}
	}
}

func TestHardConstraintsDecideTheCandidates(t *testing.T) {
	// Only Texas nodes may host the pod (required node affinity): Texas is
	// the only candidate zone, so the filter fails open instead of rejecting
	// the pod for greener zones it cannot use.
	p := newTestPlugin(t, Args{})
	if _, _, err := p.policy.setSnapshot(snapshotJSON(map[string]float64{"GB": 90, "DE": 210, "US-TEX-ERCO": 410}, time.Minute), true); err != nil {
		t.Fatal(err)
	}
	pd := pod("pinned", nil)
	pd.Spec.Affinity = &v1.Affinity{NodeAffinity: &v1.NodeAffinity{
		RequiredDuringSchedulingIgnoredDuringExecution: &v1.NodeSelector{NodeSelectorTerms: []v1.NodeSelectorTerm{{
			MatchExpressions: []v1.NodeSelectorRequirement{{Key: zoneLabel, Operator: v1.NodeSelectorOpIn, Values: []string{"US-TEX-ERCO"}}},
		}}},
	}}
	statuses, _ := decide(t, p, pd, fleet()[:4])
	if !statuses["tx-0"].IsSuccess() {
		t.Fatalf("tx-0: %v", statuses["tx-0"])
	}
	// A full green node is no candidate either.
	full := fleet()[:4]
	full[0] = node("gb-full", "GB", 100)
	statuses, _ = decide(t, p, pod("big", nil), []fwk.NodeInfo{full[0], full[3]})
	if !statuses["tx-0"].IsSuccess() {
		t.Fatalf("the green node is full, Texas must fail open: %v", statuses["tx-0"])
	}
}

func TestArgsAreValidatedByThePolicy(t *testing.T) {
	weight := int64(500)
	_, err := newPlugin(Args{CarbonWeight: &weight}, nil)
	if err == nil || !strings.Contains(err.Error(), "args.placement.carbonWeight") {
		t.Fatalf("want the field path in the error, got %v", err)
	}
	_, err = newPlugin(Args{RegionZones: map[string]string{"aws/x": "not a zone!"}}, nil)
	if err == nil || !strings.Contains(err.Error(), "regionZones") {
		t.Fatalf("got %v", err)
	}
	// Args from a KubeSchedulerConfiguration decode through New.
	raw := &runtime.Unknown{Raw: []byte(`{"namespace": "ops", "threshold": 180, "regionZones": {"dc-1": "DE"}}`), ContentType: runtime.ContentTypeJSON}
	got, err := New(context.Background(), raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	if eff, _ := got.(*Plugin).policy.setConfig(nil); fmt.Sprint(eff["threshold"]) != "180" {
		t.Fatalf("threshold from args: %v", eff)
	}
}

func TestLandingEventAfterBind(t *testing.T) {
	p := newTestPlugin(t, Args{})
	if _, _, err := p.policy.setSnapshot(snapshotJSON(map[string]float64{"GB": 90, "DE": 210, "US-TEX-ERCO": 410}, time.Minute), true); err != nil {
		t.Fatal(err)
	}
	pd := pod("p", nil)
	decide(t, p, pd, fleet())
	h, _ := p.knownZone("gb-0")
	ev, err := p.policy.landing(string(pd.UID), h)
	if err != nil || ev == nil || ev.Reason != "CarbonAwarePlacement" || !strings.HasPrefix(ev.Note, "placed in GB at 90 g/kWh over") {
		t.Fatalf("%v %v", ev, err)
	}
}

// The signature (kube-scheduler's opportunistic batching reuses one pod's
// results for the next pods with the same signature) holds what the policy
// reads of the pod and changes with the snapshot.
func TestSignPodCoversWhatTheDecisionReads(t *testing.T) {
	p := newTestPlugin(t, Args{})
	sign := func(pd *v1.Pod) string {
		t.Helper()
		frags, st := p.SignPod(context.Background(), pd)
		if !st.IsSuccess() || len(frags) != 1 || frags[0].Key != Name {
			t.Fatalf("SignPod: %v %v", frags, st)
		}
		text, err := json.Marshal(frags[0].Value)
		if err != nil {
			t.Fatal(err)
		}
		return string(text)
	}
	base := sign(pod("a", nil))
	if got := sign(pod("b", map[string]string{"other.io/x": "1"})); got != base {
		t.Fatalf("another pod with the same carbon inputs: %s != %s", got, base)
	}
	bigger := pod("c", nil)
	bigger.Spec.Containers[0].Resources.Requests[v1.ResourceCPU] = resource.MustParse("2")
	for name, pd := range map[string]*v1.Pod{
		"max-intensity": pod("d", map[string]string{"carbon-kube.io/max-intensity": "100"}),
		"opt-out":       pod("e", map[string]string{"carbon-kube.io/opt-out": "true"}),
		"cpu":           bigger,
	} {
		if got := sign(pd); got == base {
			t.Fatalf("%s: same signature %s", name, got)
		}
	}
	p.applySnapshot(&v1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: snapshotConfigMap},
		Data:       map[string]string{snapshotKey: string(snapshotJSON(map[string]float64{"GB": 90}, time.Minute))},
	}, false)
	if got := sign(pod("a", nil)); got == base {
		t.Fatalf("a new snapshot must end the batch: %s", got)
	}
}

// Filter and Score read the zone index without a lock once it is published;
// nodes seen after the last publish are still found.
func TestZoneIndexIsPublishedForLockFreeReads(t *testing.T) {
	p := newTestPlugin(t, Args{})
	nodes := fleet()
	for _, ni := range nodes {
		p.upsertNode(ni.Node())
	}
	if _, ok := p.knownZone("gb-0"); !ok {
		t.Fatal("gb-0 not found before publishing")
	}
	p.publish()
	if p.published.Load() == nil || p.dirty.Load() {
		t.Fatal("not published")
	}
	h, ok := p.knownZone("gb-0")
	if want, _ := p.knownZone("gb-0"); !ok || h != want || h == zoneNotSeen {
		t.Fatalf("gb-0: %d %v", h, ok)
	}
	late := node("late", "DE", 1000)
	p.upsertNode(late.Node())
	if !p.dirty.Load() {
		t.Fatal("a new node must mark the index dirty")
	}
	if _, ok := p.knownZone("late"); !ok {
		t.Fatal("a node added after the publish is found")
	}
	p.removeNode("late")
	p.publish()
	if _, ok := p.knownZone("late"); ok {
		t.Fatal("a removed node is gone after the next publish")
	}
}
