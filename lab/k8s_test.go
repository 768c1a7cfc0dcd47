package lab

import (
	"slices"
	"strings"
	"testing"
)

func TestNodesReady(t *testing.T) {
	nodes := []*Node{{Name: "n1"}, {Name: "n2"}}
	for out, want := range map[string]bool{
		"n1=True n2=True ":          true,
		"n2=True n1=True":           true,
		"n1=True n2=False ":         false,
		"n1=True ":                  false,
		"n1=True n2= ":              false, // registered, no Ready condition yet
		"n1=True n12=True ":         false,
		"n1=True n2=True n3=False ": true, // a node of no interest
		"":                          false,
		"n1=Truex n2=True":          false,
		"xn1=True n2=True":          false,
		"n1=True\nn2=True\n":        true,
	} {
		if got := nodesReady(out, nodes); got != want {
			t.Errorf("nodesReady(%q) = %v, want %v", out, got, want)
		}
	}
}

func TestKubectlCommand(t *testing.T) {
	l := &Lab{Name: "k8s", Fabric: "k8s-fab"}
	if _, err := l.KubectlCommand("get", "nodes"); err == nil || !strings.Contains(err.Error(), "up --k8s") {
		t.Fatalf("a lab without a control plane: %v", err)
	}
	l.K8sBinDir = "/opt/k8s"
	got, err := l.KubectlCommand("get", "pods", "-A")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"ip", "netns", "exec", "k8s-fab", "/opt/k8s/kubectl", "--kubeconfig", StateRoot + "/k8s/k8s/admin.kubeconfig", "get", "pods", "-A"}
	if !slices.Equal(got, want) {
		t.Fatalf("KubectlCommand = %q, want %q", got, want)
	}
}
