package config

import (
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/tortie-net/tortie/fib"
)

const sample = `
nodeName: node1
address: 10.0.1.1/24
encapsulation: vxlan
crossSubnet: true
podCIDR: 10.244.1.0/24
clusterCIDRs: [10.244.0.0/16]
nodes:
  - {name: node2, address: 10.0.1.2, podCIDR: 10.244.2.0/24}
  - {name: node3, address: 10.0.2.3, podCIDR: 10.244.3.0/24}
`

func TestParse(t *testing.T) {
	c, err := Parse([]byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	if c.Peers[0].Mode != fib.ModeNative || c.Peers[1].Mode != fib.ModeVXLAN {
		t.Fatalf("CrossSubnet modes: %v %v", c.Peers[0].Mode, c.Peers[1].Mode)
	}
	if c.PodMTU(1500) != 1450 || len(c.Routes()) != 4 || c.Socket == "" {
		t.Fatalf("derived settings wrong: %+v", c)
	}
	if c.Pin != nil || c.Threads() != 0 {
		t.Fatalf("pinned to %s, %d threads, without cpuSet or cpus", c.Pin, c.Threads())
	}
	c, err = Parse([]byte(sample + "cpuSet: 0,2-3\n"))
	if err != nil || c.Pin == nil || c.Pin.String() != "0,2-3" || c.Pin.Count() != 3 || c.Threads() != 3 {
		t.Fatalf("cpuSet 0,2-3: %v %v", c.Pin, err)
	}
	if c, err = Parse([]byte(sample + "cpuSet: 0,2-3\ncpus: 2\n")); err != nil || c.Threads() != 2 {
		t.Fatalf("cpus 2 on cpuSet 0,2-3: %d threads, %v", c.Threads(), err)
	}
	// Pod queues: one unless podQueues says.
	for _, q := range []struct {
		extra string
		want  int
	}{{"", 1}, {"cpus: 4\n", 1}, {"podQueues: 1\n", 1}, {"podQueues: 6\n", 6}} {
		if c, err = Parse([]byte(sample + q.extra)); err != nil || c.Queues() != q.want {
			t.Errorf("%q: %d pod queues, want %d (%v)", q.extra, c.Queues(), q.want, err)
		}
	}
	if c, err = Parse([]byte(sample + "realtimePriority: 1\n")); err != nil || c.RealtimePriority != 1 {
		t.Fatalf("realtimePriority 1: %+v, %v", c, err)
	}
	if c, err = Parse([]byte(sample)); err != nil || c.UnderlayGRO {
		t.Fatalf("underlayGRO without the key: %v, %v", c.UnderlayGRO, err)
	}
	if c, err = Parse([]byte(sample + "underlayGRO: true\n")); err != nil || !c.UnderlayGRO {
		t.Fatalf("underlayGRO: true: %v, %v", c.UnderlayGRO, err)
	}
	// Busy polling: none unless busyPoll says.
	for _, b := range []struct {
		extra string
		want  time.Duration
	}{{"", 0}, {"busyPoll: 0s\n", 0}, {"busyPoll: 50us\n", 50 * time.Microsecond}, {"busyPoll: 1ms\n", time.Millisecond},
		{"busyPoll: 0s\ninputLoops: false\n", 0}} {
		if c, err = Parse([]byte(sample + b.extra)); err != nil || c.BusyPoll != b.want {
			t.Errorf("%q: busy poll %v, want %v (%v)", b.extra, c.BusyPoll, b.want, err)
		}
	}
	// Busy polling on more than one thread is warned about, not refused.
	for _, b := range []struct {
		extra string
		warn  bool
	}{{"busyPoll: 50us\n", runtime.GOMAXPROCS(0) > 1}, {"busyPoll: 50us\ncpus: 2\n", true}, {"busyPoll: 50us\ncpuSet: \"0-1\"\n", true},
		{"busyPoll: 50us\ncpus: 1\n", false}, {"busyPoll: 50us\ncpuSet: \"1\"\n", false}, {"cpus: 2\n", false}} {
		c, err := Parse([]byte(sample + b.extra))
		if err != nil {
			t.Fatalf("%q: %v", b.extra, err)
		}
		warned := slices.ContainsFunc(c.Warnings, func(w string) bool { return strings.HasPrefix(w, "busyPoll with ") })
		if warned != b.warn {
			t.Errorf("%q: warned %v, want %v (%q)", b.extra, warned, b.warn, c.Warnings)
		}
	}
	// Input loops: on unless inputLoops says false.
	for _, l := range []struct {
		extra string
		want  bool
	}{{"", true}, {"inputLoops: true\n", true}, {"inputLoops: false\n", false}} {
		if c, err = Parse([]byte(sample + l.extra)); err != nil || c.Loops() != l.want {
			t.Errorf("%q: input loops %v, want %v (%v)", l.extra, c.Loops(), l.want, err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"nodeName: a\naddress: 10.0.0.1\nencapsulation: vxlan\npodCIDR: 10.1.0.0/24", "prefix length"},
		{"nodeName: a\naddress: 10.0.0.1/24\nencapsulation: gre\npodCIDR: 10.1.0.0/24", "unknown encapsulation"},
		{"nodeName: a\naddress: 10.0.0.1/24\nencapsulation: vxlan\npodCIDR: 10.1.0.0/24\nbogus: 1", "unknown field"},
		{"nodeName: a\naddress: 10.0.0.1/24\nencapsulation: vxlan\npodCIDR: 10.1.0.0/24\nnodes: [{name: a, address: x, podCIDR: y}]", "must be set and differ"},
		{"{", "config"},
		{"nodeName: a\naddress: 10.0.0.1/24\nencapsulation: vxlan\npodCIDR: 10.1.0.0/24\npodQueues: 9", "podQueues 9: want 0 (one) to 8"},
		{"nodeName: a\naddress: 10.0.0.1/24\nencapsulation: vxlan\npodCIDR: 10.1.0.0/24\nrealtimePriority: 100", "realtimePriority 100: want 0 (the normal scheduler) or 1 to 99"},
		{"nodeName: a\naddress: 10.0.0.1/24\nencapsulation: vxlan\npodCIDR: 10.1.0.0/24\nrealtimePriority: -1", "realtimePriority -1"},
		{"nodeName: a\naddress: 10.0.0.1/24\nencapsulation: vxlan\npodCIDR: 10.1.0.0/24\nrealtimePriority: 1\ncpuSet: \"1\"\ncpus: 2", "realtimePriority: cpus 2 is more than the 1 CPUs of cpuSet 1"},
		{"nodeName: a\naddress: 10.0.0.1/24\nencapsulation: vxlan\npodCIDR: 10.1.0.0/24\ncpuSet: 3-1", "cpuSet: CPU list \"3-1\": range 3-1 runs backwards"},
		{"nodeName: a\naddress: 10.0.0.1/24\nencapsulation: vxlan\npodCIDR: 10.1.0.0/24\nbusyPoll: 2ms", "busyPoll \"2ms\": want 0 or a duration from 1us to 1ms"},
		{"nodeName: a\naddress: 10.0.0.1/24\nencapsulation: vxlan\npodCIDR: 10.1.0.0/24\nbusyPoll: 999ns", "busyPoll \"999ns\""},
		{"nodeName: a\naddress: 10.0.0.1/24\nencapsulation: vxlan\npodCIDR: 10.1.0.0/24\nbusyPoll: -1us", "busyPoll \"-1us\""},
		{"nodeName: a\naddress: 10.0.0.1/24\nencapsulation: vxlan\npodCIDR: 10.1.0.0/24\nbusyPoll: 50", "busyPoll \"50\""},
		{"nodeName: a\naddress: 10.0.0.1/24\nencapsulation: vxlan\npodCIDR: 10.1.0.0/24\nbusyPoll: 50us\ninputLoops: false", "busyPoll: only input loops spin"},
		{"nodeName: a\naddress: 10.0.0.1/24\nencapsulation: vxlan\npodCIDR: 10.1.0.0/24\nbusyPoll: 50us\nrealtimePriority: 1", "busyPoll with realtimePriority"},
	} {
		if _, err := Parse([]byte(c.in)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q) = %v, want error containing %q", c.in, err, c.want)
		}
	}
}

func TestSlash32Warning(t *testing.T) {
	c, err := Parse([]byte(strings.Replace(sample, "10.0.1.1/24", "10.0.1.1/32", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) != 1 || c.Peers[0].Mode != fib.ModeVXLAN {
		t.Fatalf("a /32 node address must warn and tunnel: %v", c.Warnings)
	}
}

func TestDatastoreMode(t *testing.T) {
	c, err := Parse([]byte("nodeName: n1\naddress: 10.0.1.1/24\ndatastore: {etcdEndpoints: [http://10.0.1.1:2379]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.VTEPMAC.String() == "00:00:00:00:00:00" || c.StateDir == "" || len(c.Routes()) != 1 {
		t.Fatalf("defaults not derived: %+v", c)
	}
	if _, err := Parse([]byte("nodeName: n1\naddress: 10.0.1.1/24\npodCIDR: 10.1.0.0/24\ndatastore: {etcdEndpoints: [x]}\n")); err == nil {
		t.Fatal("static settings accepted with a datastore")
	}
	if _, err := Parse([]byte("nodeName: n1\naddress: 10.0.1.1/24\ndatastore: {}\n")); err == nil {
		t.Fatal("empty datastore section accepted")
	}
}

// The example in the repository stays a valid configuration.
func TestExampleConfig(t *testing.T) {
	c, err := Load("../examples/tortied.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The example uses the default route source: copying it starts no BGP.
	if c.Datastore == nil || c.Datastore.RouteSource != RouteSourceDatastore {
		t.Fatalf("example: %+v", c.Datastore)
	}
	def, err := Parse([]byte("nodeName: a\naddress: 10.0.1.1/24\ndatastore: {etcdEndpoints: [http://x:2379]}\n"))
	if err != nil || def.Datastore.RouteSource != RouteSourceDatastore {
		t.Fatalf("default route source: %+v %v", def.Datastore, err)
	}
	if _, err := Parse([]byte("nodeName: a\naddress: 10.0.1.1/24\ndatastore: {etcdEndpoints: [http://x:2379], routeSource: ospf}\n")); err == nil {
		t.Fatal("routeSource ospf accepted")
	}
}

func TestDatastoreTLSAndCompaction(t *testing.T) {
	const head = "nodeName: n1\naddress: 10.0.1.1/24\ndatastore:\n"
	const member = "  embedded: {dataDir: /d, clientURL: https://10.0.1.1:2379, peerURL: https://10.0.1.1:2380, certFile: m.crt, keyFile: m.key, trustedCAFile: ca.crt"
	const client = "  etcdCACertFile: ca.crt\n  etcdCertFile: n1.crt\n  etcdKeyFile: n1.key\n"
	c, err := Parse([]byte(head + client + member + ", autoCompactionRetention: 30m, defragInterval: 10m, quotaBackendBytes: 8589934592}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.DefragInterval.Minutes() != 10 || c.Datastore.EtcdCertFile != "n1.crt" || c.Datastore.Embedded.TrustedCAFile != "ca.crt" {
		t.Fatalf("parsed: %+v %+v", c.Datastore, c.DefragInterval)
	}
	if c, err := Parse([]byte(head + client + member + ", defragInterval: \"0\"}\n")); err != nil || c.DefragInterval >= 0 {
		t.Fatalf("defragInterval 0 means never: %v %v", c, err)
	}
	if _, err := Parse([]byte(head + "  etcdEndpoints: [https://e1:2379]\n  etcdCACertFile: ca.crt\n")); err != nil {
		t.Fatalf("CA only, for members that do not ask for client certificates: %v", err)
	}
	for _, tc := range []struct{ in, want string }{
		{head + member + "}\n", "requires client certificates"},
		{head + client + "  embedded: {dataDir: /d, clientURL: https://10.0.1.1:2379, peerURL: https://10.0.1.1:2380}\n", "need certFile, keyFile and trustedCAFile"},
		{head + "  embedded: {dataDir: /d, clientURL: http://10.0.1.1:2379, peerURL: http://10.0.1.1:2380, certFile: m.crt}\n", "need https clientURL"},
		{head + client + "  embedded: {dataDir: /d, clientURL: https://10.0.1.1:2379, peerURL: http://10.0.1.1:2380, certFile: m.crt, keyFile: m.key, trustedCAFile: ca.crt}\n", "both be http or both https"},
		{head + "  etcdEndpoints: [http://e1:2379]\n  etcdCACertFile: ca.crt\n", "need https etcd endpoints"},
		{head + "  etcdEndpoints: [https://e1:2379, http://e2:2379]\n", "all https or none"},
		{head + "  etcdEndpoints: [https://e1:2379]\n  etcdCertFile: n1.crt\n", "both etcdCertFile and etcdKeyFile"},
		{head + client + member + ", autoCompactionMode: hourly}\n", "want periodic or revision"},
		{head + client + member + ", autoCompactionMode: revision, autoCompactionRetention: 1h}\n", "number of revisions"},
		{head + client + member + ", autoCompactionRetention: soon}\n", "want a duration"},
		{head + client + member + ", defragInterval: often}\n", "defragInterval"},
		{head + client + member + ", quotaBackendBytes: -1}\n", "quotaBackendBytes"},
	} {
		if _, err := Parse([]byte(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want error containing %q", tc.in, err, tc.want)
		}
	}
}

func TestExpandEnv(t *testing.T) {
	env := map[string]string{"NODENAME": "n7", "HOST_IP": "10.0.1.7"}
	got := ExpandEnv("nodeName: ${NODENAME}\naddress: $HOST_IP/24\npassword: a$$b\nunset: '${NOPE}'\n", func(k string) string { return env[k] })
	want := "nodeName: n7\naddress: 10.0.1.7/24\npassword: a$b\nunset: ''\n"
	if got != want {
		t.Fatalf("ExpandEnv:\n%s\nwant:\n%s", got, want)
	}
	c, err := Parse([]byte(ExpandEnv("nodeName: ${NODENAME}\naddress: ${HOST_IP}/24\nencapsulation: vxlan\npodCIDR: 10.1.0.0/24\n",
		func(k string) string { return env[k] })))
	if err != nil {
		t.Fatal(err)
	}
	if c.NodeName != "n7" || c.Addr.String() != "10.0.1.7/24" {
		t.Fatalf("config %s %s", c.NodeName, c.Addr)
	}
}

// TestDeployConfigMap parses the configuration the DaemonSet in deploy/
// gives tortied, with the environment the downward API gives it.
func TestDeployConfigMap(t *testing.T) {
	b, err := os.ReadFile("../deploy/tortie.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, doc := range strings.Split(string(b), "\n---\n") {
		var cm struct {
			Kind string            `json:"kind"`
			Data map[string]string `json:"data"`
		}
		if err := yaml.Unmarshal([]byte(doc), &cm); err != nil {
			t.Fatal(err)
		}
		if cm.Kind != "ConfigMap" {
			continue
		}
		found = true
		env := map[string]string{"NODENAME": "node-7", "NODE_ADDRESS": "10.0.1.7/24"}
		c, err := Parse([]byte(ExpandEnv(cm.Data["tortied.yaml"], func(k string) string { return env[k] })))
		if err != nil {
			t.Fatal(err)
		}
		if c.NodeName != "node-7" || c.Addr.String() != "10.0.1.7/24" || c.Datastore == nil {
			t.Fatalf("deployed config: %+v", c.File)
		}
		// Policy from the API server, in-cluster, with kubeadm's Services.
		if c.Kubernetes == nil || c.Kubernetes.Kubeconfig != "" || len(c.ServiceNets) != 1 || c.ServiceNets[0].String() != "10.96.0.0/12" {
			t.Fatalf("deployed config's kubernetes section: %+v, service nets %v", c.Kubernetes, c.ServiceNets)
		}
	}
	if !found {
		t.Fatal("no ConfigMap in deploy/tortie.yaml")
	}
}

func TestKubernetes(t *testing.T) {
	base := "nodeName: a\naddress: 10.0.1.1/24\ndatastore: {etcdEndpoints: [http://x:2379]}\n"
	c, err := Parse([]byte(base + "kubernetes: {kubeconfig: k.conf, serviceClusterIPRanges: [10.96.0.1/12, 'fd00:10:96::/112']}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Kubernetes.Kubeconfig != "k.conf" || len(c.ServiceNets) != 1 || c.ServiceNets[0].String() != "10.96.0.0/12" {
		t.Errorf("kubernetes %+v, service nets %v", c.Kubernetes, c.ServiceNets)
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "IPv6") {
		t.Errorf("warnings %q: want one about the IPv6 range", c.Warnings)
	}
	for _, bad := range []string{
		base + "kubernetes: {serviceClusterIPRanges: [10.96.0.0]}\n",
		"nodeName: a\naddress: 10.0.1.1/24\nencapsulation: vxlan\npodCIDR: 10.244.0.0/24\nkubernetes: {}\n",
	} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestDatastoreType(t *testing.T) {
	const head = "nodeName: a\naddress: 10.0.1.1/24\n"
	c, err := Parse([]byte(head + "datastore: {etcdEndpoints: [http://x:2379]}\n"))
	if err != nil || c.Datastore.Type != DatastoreEtcd {
		t.Fatalf("default type: %+v %v", c, err)
	}
	c, err = Parse([]byte(head + "datastore: {type: kubernetes, kubeconfig: /etc/tortie/kube.conf}\n"))
	if err != nil || c.Datastore.Type != DatastoreKubernetes || c.Datastore.Kubeconfig != "/etc/tortie/kube.conf" {
		t.Fatalf("kubernetes: %+v %v", c, err)
	}
	// Without its own kubeconfig the datastore reaches the API server the
	// kubernetes section names, and in-cluster without one.
	c, err = Parse([]byte(head + "datastore: {type: kubernetes}\nkubernetes: {kubeconfig: k.conf}\n"))
	if err != nil || c.Datastore.Kubeconfig != "k.conf" {
		t.Fatalf("kubeconfig from kubernetes: %+v %v", c, err)
	}
	c, err = Parse([]byte(head + "datastore: {type: kubernetes, kubeconfig: d.conf, routeSource: bgp}\nkubernetes: {kubeconfig: k.conf}\n"))
	if err != nil || c.Datastore.Kubeconfig != "d.conf" || c.Datastore.RouteSource != RouteSourceBGP {
		t.Fatalf("datastore's own kubeconfig and BGP: %+v %v", c, err)
	}
	c, err = Parse([]byte(head + "datastore: {type: kubernetes}\n"))
	if err != nil || c.Datastore.Kubeconfig != "" || c.Datastore.RouteSource != RouteSourceDatastore {
		t.Fatalf("in-cluster: %+v %v", c, err)
	}
	for _, tc := range []struct{ in, want string }{
		{head + "datastore: {type: kubernetes, etcdEndpoints: [http://x:2379]}\n", "type kubernetes keeps cluster state in the Kubernetes API, not etcd: remove etcdEndpoints"},
		{head + "datastore: {type: kubernetes, embedded: {dataDir: /d, clientURL: http://a:2379, peerURL: http://a:2380}}\n", "remove embedded"},
		{head + "datastore: {type: kubernetes, etcdCACertFile: ca.crt, etcdCertFile: n.crt, etcdKeyFile: n.key}\n", "remove etcdCACertFile, etcdCertFile, etcdKeyFile"},
		{head + "datastore: {type: etcdv3, kubeconfig: k.conf, etcdEndpoints: [http://x:2379]}\n", "datastore.kubeconfig is for type kubernetes"},
		{head + "datastore: {type: etcdv3}\n", "set etcdEndpoints, embedded, or both"},
		{head + "datastore: {type: etcd, etcdEndpoints: [http://x:2379]}\n", `datastore.type "etcd": want etcdv3 or kubernetes`},
		{head + "datastore: {type: kubernetes}\npodCIDR: 10.1.0.0/24\n", "podCIDR and nodes are static settings"},
	} {
		if _, err := Parse([]byte(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want error containing %q", tc.in, err, tc.want)
		}
	}
}
