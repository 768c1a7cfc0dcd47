package lab

import (
	"slices"
	"testing"
)

func TestPodNamespace(t *testing.T) {
	cases := []struct {
		pod     Pod
		ns, wep string
		wantErr bool
	}{
		{Pod{Name: "n1p1", Node: "n1"}, "default", "default/n1-k8s-n1p1-eth0", false},
		{Pod{Name: "web-0", Node: "n2", Namespace: "prod"}, "prod", "prod/n2-k8s-web--0-eth0", false},
		{Pod{Name: "-bad", Node: "n1"}, "default", "", true},
	}
	for _, c := range cases {
		if got := c.pod.PodNamespace(); got != c.ns {
			t.Errorf("%+v: namespace %q, want %q", c.pod, got, c.ns)
		}
		args := c.pod.Runtime().Args
		if !slices.Contains(args, [2]string{"K8S_POD_NAMESPACE", c.ns}) || !slices.Contains(args, [2]string{"K8S_POD_NAME", c.pod.Name}) {
			t.Errorf("%+v: CNI args %v", c.pod, args)
		}
		wep, err := c.pod.WorkloadEndpoint()
		if (err != nil) != c.wantErr || wep != c.wep {
			t.Errorf("%+v: WorkloadEndpoint %q, %v; want %q (error %v)", c.pod, wep, err, c.wep, c.wantErr)
		}
	}
}
