package lab

import (
	"os"
	"strings"
	"testing"

	"github.com/tortie-net/tortie/config"
	"github.com/tortie-net/tortie/internal/testutil"
)

// A node's configuration switches to the Kubernetes datastore and back,
// keeping everything else, and is valid each time.
func TestSwitchDatastore(t *testing.T) {
	testutil.RequireRoot(t) // the lab's state lives under StateRoot
	const name = "tdsw"
	if _, err := os.Stat(Dir(name)); err == nil {
		t.Fatalf("%s exists", Dir(name))
	}
	if err := os.MkdirAll(Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(Dir(name)) })
	n1, n2 := &Node{Name: "n1", Address: "10.0.1.1/24"}, &Node{Name: "n2", Address: "10.0.1.2/24"}
	l := &Lab{Name: name, Datastore: true, BGP: true, EtcdURL: "http://10.0.1.254:12379", Nodes: []*Node{n1, n2},
		Etcd: []*EtcdMember{{Name: "m1", ClientURL: "http://10.0.1.254:12379"}}}
	base := config.File{NodeName: "n2", Address: n2.Address, Socket: "/run/x.sock", CPUs: 1, Datastore: l.etcdDatastore(n2)}
	if err := l.WriteNodeConfig(n2, base); err != nil {
		t.Fatal(err)
	}
	if err := l.UseKubernetesDatastore(n2, "/k/tortie-node-n2.kubeconfig"); err != nil {
		t.Fatal(err)
	}
	f, err := l.NodeConfig(n2)
	if err != nil {
		t.Fatal(err)
	}
	if d := f.Datastore; d.Type != config.DatastoreKubernetes || d.Kubeconfig != "/k/tortie-node-n2.kubeconfig" || len(d.EtcdEndpoints) != 0 ||
		d.RouteSource != config.RouteSourceBGP || f.Socket != "/run/x.sock" || f.CPUs != 1 {
		t.Fatalf("kubernetes: %+v, datastore %+v", f, d)
	}
	if err := l.UseEtcdDatastore(n2); err != nil {
		t.Fatal(err)
	}
	if f, err = l.NodeConfig(n2); err != nil {
		t.Fatal(err)
	}
	if d := f.Datastore; d.Type == config.DatastoreKubernetes || d.Kubeconfig != "" || len(d.EtcdEndpoints) != 1 || d.EtcdEndpoints[0] != "http://10.0.1.254:12379" ||
		d.RouteSource != config.RouteSourceBGP {
		t.Fatalf("back on etcd: %+v", d)
	}

	// A file tortied would refuse is not written.
	bad := base
	bad.Datastore = &config.Datastore{Type: "kubernetes", EtcdEndpoints: []string{"http://x:2379"}}
	if err := l.WriteNodeConfig(n2, bad); err == nil || !strings.Contains(err.Error(), "remove etcdEndpoints") {
		t.Fatalf("invalid config written: %v", err)
	}
	// The etcd embedded in n1 would go with n1's tortied.
	l.Etcd = nil
	if err := l.UseKubernetesDatastore(n2, "k"); err == nil || !strings.Contains(err.Error(), "EtcdMembers") {
		t.Fatalf("embedded etcd: %v", err)
	}
	if err := l.UseKubernetesDatastore(&Node{Name: "n3", Kernel: true}, "k"); err == nil {
		t.Fatal("a kernel node switched")
	}
}
