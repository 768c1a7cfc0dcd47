package k8s

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tortie-net/tortie/api"
	"github.com/tortie-net/tortie/datastore/migrate"
	"github.com/tortie-net/tortie/internal/labtest"
	"github.com/tortie-net/tortie/internal/testutil"
	"github.com/tortie-net/tortie/lab"
)

// TestMigrateToKubernetes moves a running cluster from etcd to the
// Kubernetes API datastore and back, as the README tells an operator to:
// a VXLAN lab of two nodes with pods on both, its state in an etcd of its
// own; Calico's CRDs installed in the lab's API server; every tortied
// stopped; `tortiectl datastore migrate --from etcd --to kubernetes`; every
// node's configuration switched to datastore type kubernetes and tortied
// started again. Then every pod keeps its address, IPAM reads exactly as
// before, the pods reach each other and TCP crosses the nodes, a new pod
// gets an address no other has, and a node's tortied shows the pool from
// the API server. The way back (--from kubernetes --to etcd) first refuses
// to overwrite the older state still in etcd, then, with --overwrite,
// brings the new pod's records along, and the nodes run on etcd again.
func TestMigrateToKubernetes(t *testing.T) {
	testutil.RequireRoot(t)
	bins := k8sBinDir(t)
	crds, err := filepath.Abs("../../deploy/crds.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(crds); err != nil {
		t.Fatalf("the Kubernetes datastore's CRDs: %v", err)
	}
	// The etcd is the lab's own (not embedded in n1's tortied), so that
	// the API server keeps it when the nodes leave it; info logs, for the
	// line that says which datastore a node uses.
	l := labtest.Up(t, lab.Options{Name: "tmig", Nodes: 2, Pods: 2, Mode: "vxlan", EtcdMembers: 1, LogLevel: "info"})
	n1, n2 := l.Nodes[0], l.Nodes[1]
	checkPods(t, l, "on etcd")
	before := podAddrs(l)
	ipamBefore := ipamView(t, n1)

	cp, err := l.StartControlPlane(bins)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(cp.Dir, "kube-apiserver.log")); err == nil {
				t.Logf("kube-apiserver log:\n%s", labtest.TailLines(string(b), 20))
			}
		}
	})
	kubectl(t, cp, "apply", "-f", crds)
	kubectl(t, cp, "wait", "--for", "condition=established", "--timeout=60s", "-f", crds)

	stopAll(t, l)
	rep, out := migrateLab(t, l, cp, "--from", "etcd", "--to", "kubernetes")
	t.Logf("migration to the Kubernetes API:\n%s", out)
	if tot := rep.Total(); tot.Created == 0 || tot.Created != tot.Records || tot.Failed+tot.Invalid != 0 || len(rep.Extra) != 0 {
		t.Fatalf("migration: %+v, extra %q", tot, rep.Extra)
	}
	for _, dir := range []string{"ippools/", "nodes/", "ipam/blocks/", "ipam/affinities/", "ipam/handles/"} {
		if d := dirReport(rep, "/tortie/v1/"+dir); d.Created == 0 {
			t.Errorf("nothing copied in /tortie/v1/%s: %+v", dir, rep.Dirs)
		}
	}
	if d := dirReport(rep, "/calico/resources/v3/projectcalico.org/workloadendpoints/"); d.Created != len(before) {
		t.Errorf("workload endpoints copied: %+v, want %d", d, len(before))
	}
	// Again: everything is there already, nothing is written.
	if again, _ := migrateLab(t, l, cp, "--from", "etcd", "--to", "kubernetes"); again.Total().Unchanged != rep.Total().Records {
		t.Fatalf("second migration: %+v", again.Total())
	}
	if pools := kubectl(t, cp, "get", "ippools.crd.projectcalico.org", "-o", "name"); !strings.Contains(pools, "default-ipv4-ippool") {
		t.Fatalf("the pool in the API server: %q", pools)
	}

	for _, n := range l.Nodes {
		kc, err := cp.TortiedKubeconfig(n)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.UseKubernetesDatastore(n, kc); err != nil {
			t.Fatal(err)
		}
	}
	startAll(t, l, "kubernetes")
	checkSameAddresses(t, l, before)
	if got := ipamView(t, n2); !sameIPAM(got, ipamBefore) {
		t.Fatalf("IPAM from the Kubernetes API differs from etcd's:\n%+v\nwant\n%+v", got, ipamBefore)
	}
	noInvalid(t, l)
	checkPods(t, l, "on the Kubernetes API")
	transfer(t, l, "n1p1", "n2p1")

	out2, err := exec.Command(filepath.Join(labtest.BinDir, "tortiectl"), "--socket", n2.Socket, "get", "ippools").CombinedOutput()
	if err != nil || !strings.Contains(string(out2), "default-ipv4-ippool") || !strings.Contains(string(out2), lab.PoolCIDR) {
		t.Fatalf("tortiectl get ippools through n2: %v\n%s", err, out2)
	}

	// A new pod: an address nothing had, kept in the API server.
	taken := map[string]bool{}
	for _, h := range ipamBefore.Handles {
		for _, a := range h.IPs {
			taken[a] = true
		}
	}
	p := addLabPod(t, l, n2, "n2p3")
	if p.Address == "" || taken[p.Address] {
		t.Fatalf("new pod got %q, an address already held (%v)", p.Address, taken)
	}
	checkPods(t, l, "with a pod added on the Kubernetes API")
	ipamKube := ipamView(t, n1)
	if !holds(ipamKube, p.Address) {
		t.Fatalf("the new pod's address %s is in no handle of the API server's IPAM: %+v", p.Address, ipamKube.Handles)
	}

	// Back to etcd, which still holds the state from before the pod:
	// refused without --overwrite, then brought up to date.
	stopAll(t, l)
	refused, rout, err := migrateLabErr(l, cp, "--from", "kubernetes", "--to", "etcd")
	if err == nil || !strings.Contains(rout, "differ") || len(refused.Differing) == 0 {
		t.Fatalf("migrating back over older state: %v, report %+v\n%s", err, refused, rout)
	}
	back, out := migrateLab(t, l, cp, "--from", "kubernetes", "--to", "etcd", "--overwrite")
	t.Logf("migration back to etcd:\n%s", out)
	if tot := back.Total(); tot.Created == 0 || tot.Updated == 0 || tot.Failed != 0 || len(back.Extra) != 0 {
		t.Fatalf("migration back: %+v, extra %q", tot, back.Extra)
	}
	for _, n := range l.Nodes {
		if err := l.UseEtcdDatastore(n); err != nil {
			t.Fatal(err)
		}
	}
	startAll(t, l, "etcdv3")
	after := podAddrs(l)
	checkSameAddresses(t, l, after)
	if got := ipamView(t, n1); !sameIPAM(got, ipamKube) {
		t.Fatalf("IPAM back on etcd differs from the API server's:\n%+v\nwant\n%+v", got, ipamKube)
	}
	noInvalid(t, l)
	checkPods(t, l, "back on etcd")
}

// migrateLab runs tortiectl's migration from the fabric namespace, which
// reaches both the lab's etcd and its API server, and returns its report.
func migrateLab(t *testing.T, l *lab.Lab, cp *lab.ControlPlane, args ...string) (migrate.Report, string) {
	t.Helper()
	rep, out, err := migrateLabErr(l, cp, args...)
	if err != nil {
		t.Fatalf("tortiectl datastore migrate %q: %v\n%s", args, err, out)
	}
	return rep, out
}

func migrateLabErr(l *lab.Lab, cp *lab.ControlPlane, args ...string) (migrate.Report, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	argv := append([]string{"netns", "exec", l.Fabric, filepath.Join(labtest.BinDir, "tortiectl"), "-o", "json", "datastore", "migrate",
		"--etcd-endpoints", l.EtcdURL, "--kubeconfig", cp.Admin}, args...)
	cmd := exec.CommandContext(ctx, "ip", argv...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var rep migrate.Report
	if jerr := json.Unmarshal([]byte(stdout.String()), &rep); jerr != nil && err == nil {
		err = fmt.Errorf("report: %w", jerr)
	}
	return rep, stdout.String() + stderr.String(), err
}

func dirReport(r migrate.Report, dir string) migrate.Dir {
	for _, d := range r.Dirs {
		if d.Dir == dir {
			return d
		}
	}
	return migrate.Dir{}
}

// stopAll stops every node's tortied (SIGTERM, as an operator would);
// the pods' interfaces stay for the next start.
func stopAll(t *testing.T, l *lab.Lab) {
	t.Helper()
	for _, n := range l.Nodes {
		if err := l.Stop(n, false); err != nil {
			t.Fatal(err)
		}
	}
}

// startAll starts every node's tortied on its configuration and checks,
// from the startup line of its log, that it runs on datastore typ.
func startAll(t *testing.T, l *lab.Lab, typ string) {
	t.Helper()
	for _, n := range l.Nodes {
		if err := l.Start(n); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range l.Nodes {
		var running string
		testutil.WaitFor(t, 10*time.Second, n.Name+"'s startup log line", func() bool {
			b, _ := os.ReadFile(n.Log)
			running = ""
			for _, line := range strings.Split(string(b), "\n") {
				if strings.Contains(line, `"tortied running"`) {
					running = line // the last start's
				}
			}
			return strings.Contains(running, `"datastore":"`+typ+`"`)
		})
	}
}

// podAddrs are the lab's pods' addresses, by name.
func podAddrs(l *lab.Lab) map[string]string {
	out := map[string]string{}
	for _, p := range l.Pods() {
		out[p.Name] = p.Address
	}
	return out
}

// checkSameAddresses checks that each node's tortied serves every pod of
// want (by name) at its address.
func checkSameAddresses(t *testing.T, l *lab.Lab, want map[string]string) {
	t.Helper()
	for _, n := range l.Nodes {
		eps, err := api.NewClient(n.Socket).Endpoints()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, e := range eps {
			got[e.PodName] = e.Address.String()
		}
		for _, p := range n.Pods {
			if got[p.Name] != want[p.Name] {
				t.Errorf("%s on %s: address %q, want %q", p.Name, n.Name, got[p.Name], want[p.Name])
			}
		}
	}
}

// checkPods runs the lab's ping matrix.
func checkPods(t *testing.T, l *lab.Lab, when string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ps := l.Check(ctx)
	for _, p := range lab.Failed(ps) {
		t.Errorf("%s: %s -> %s (%s) failed (ttl %d, want %d):\n%s", when, p.From, p.To, p.ToAddr, p.TTL, p.WantTTL, p.Output)
	}
	if len(ps) == 0 {
		t.Fatal("empty matrix")
	}
	if t.Failed() {
		t.FailNow()
	}
}

// transfer moves 20 MiB over TCP between two pods and checks all of it
// arrived as sent.
func transfer(t *testing.T, l *lab.Lab, from, to string) {
	t.Helper()
	labtest.SendAll(t, l.Pod(from), l.Pod(to), 1, 20<<20, false)
}

// addLabPod attaches a new pod to node n through CNI, in a namespace named
// as the lab names its own (so that lab.Down removes it), and adds it to
// the lab's matrix.
func addLabPod(t *testing.T, l *lab.Lab, n *lab.Node, name string) *lab.Pod {
	t.Helper()
	p := &lab.Pod{Name: name, Netns: l.Name + "-" + name, Node: n.Name}
	testutil.Run(t, "ip", "netns", "add", p.Netns)
	testutil.Run(t, "ip", "-n", p.Netns, "link", "set", "lo", "up")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.AddPodCNI(ctx, n, p); err != nil {
		t.Fatal(err)
	}
	n.Pods = append(n.Pods, p)
	return p
}

func ipamView(t *testing.T, n *lab.Node) api.IPAMView {
	t.Helper()
	v, err := api.NewClient(n.Socket).IPAM()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// sameIPAM compares two views of IPAM, in any order.
func sameIPAM(a, b api.IPAMView) bool {
	norm := func(v api.IPAMView) string {
		slices.SortFunc(v.Blocks, func(x, y api.IPAMBlock) int { return strings.Compare(x.CIDR, y.CIDR) })
		slices.SortFunc(v.Handles, func(x, y api.IPAMHandle) int { return strings.Compare(x.ID, y.ID) })
		for _, h := range v.Handles {
			slices.Sort(h.IPs)
		}
		out, _ := json.Marshal(v)
		return string(out)
	}
	return norm(a) == norm(b)
}

func holds(v api.IPAMView, addr string) bool {
	for _, h := range v.Handles {
		if slices.Contains(h.IPs, addr) {
			return true
		}
	}
	return false
}

// noInvalid checks that no node skips a record it read: every record
// survived the trip in a form tortie decodes.
func noInvalid(t *testing.T, l *lab.Lab) {
	t.Helper()
	for _, n := range l.Nodes {
		recs, err := api.NewClient(n.Socket).InvalidRecords()
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) > 0 {
			t.Errorf("%s skips invalid records: %+v", n.Name, recs)
		}
	}
}
