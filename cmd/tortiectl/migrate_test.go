package main

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/datastore/migrate"
)

func TestParseMigrate(t *testing.T) {
	env := func(k string) string { return map[string]string{"KUBECONFIG": "/home/op/.kube/config"}[k] }
	m, err := parseMigrate([]string{"--from", "etcdv3", "--to=kubernetes", "--etcd-endpoints", "https://e1:2379, https://e2:2379",
		"--etcd-ca-cert-file", "ca.crt", "--etcd-cert-file", "a.crt", "--etcd-key-file", "a.key", "--dry-run"}, env)
	if err != nil {
		t.Fatal(err)
	}
	if m.from != storeEtcd || m.to != storeKubernetes || len(m.stores.etcdEndpoints) != 2 || m.stores.etcdEndpoints[1] != "https://e2:2379" ||
		m.stores.etcdTLS.KeyFile != "a.key" || m.stores.kubeconfig != "/home/op/.kube/config" || !m.dryRun || m.overwrite {
		t.Fatalf("parsed %+v", m)
	}
	if m, err := parseMigrate([]string{"--from", "kubernetes", "--to", "etcd", "--etcd-endpoints", "http://e:2379", "--kubeconfig", "k", "--overwrite"}, env); err != nil ||
		m.stores.kubeconfig != "k" || !m.overwrite {
		t.Fatalf("kubernetes to etcd: %+v %v", m, err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--to", "kubernetes", "--etcd-endpoints", "http://e:2379"}, "--from and --to are required"},
		{[]string{"--from", "etcd", "--to", "etcd", "--etcd-endpoints", "http://e:2379"}, "both etcd"},
		{[]string{"--from", "consul", "--to", "kubernetes", "--etcd-endpoints", "http://e:2379"}, `datastore "consul": want etcd or kubernetes`},
		{[]string{"--from", "etcd", "--to", "kubernetes"}, "--etcd-endpoints is required"},
		{[]string{"--from", "etcd", "--to", "kubernetes", "--etcd-endpoints", "https://e:2379", "--etcd-cert-file", "a.crt"}, "go together"},
		{[]string{"--from", "etcd", "--to", "kubernetes", "--etcd-endpoints", "http://e:2379", "now"}, "unexpected arguments"},
		{[]string{"--from", "etcd", "--to", "kubernetes", "--force"}, "flag provided but not defined: -force"},
	} {
		if _, err := parseMigrate(c.args, env); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("parseMigrate(%q) = %v, want an error containing %q", c.args, err, c.want)
		}
	}
}

func TestDatastoreMigrate(t *testing.T) {
	stores := map[string]*datastore.Memory{storeEtcd: datastore.NewMemory(), storeKubernetes: datastore.NewMemory()}
	orig := openStore
	t.Cleanup(func() { openStore = orig })
	openStore = func(kind string, _ storeFlags) (datastore.Store, error) { return stores[kind], nil }
	ctx := context.Background()
	pool := "/tortie/v1/ippools/pods"
	put := func(s *datastore.Memory, key, v string) {
		if _, err := s.Put(ctx, key, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	put(stores[storeEtcd], pool, `{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"pods"},"spec":{"cidr":"10.244.0.0/16"}}`)
	put(stores[storeEtcd], "/tortie/v1/ipam/handles/h1", `{"id":"h1"}`) // no node: does not decode
	put(stores[storeEtcd], "/tortie/heartbeats/n1", `{}`)
	args := []string{"migrate", "--from", "etcd", "--to", "kubernetes", "--etcd-endpoints", "http://e:2379"}

	var out, errOut strings.Builder
	if err := datastoreCmd(ctx, append(args, "--dry-run"), "table", &out, &errOut); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"etcd -> kubernetes (would copy)", "/tortie/v1/ippools/", "/tortie/v1/ipam/handles/", "total"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("dry run's output lacks %q:\n%s", want, out.String())
		}
	}
	if !strings.Contains(errOut.String(), "warning: /tortie/v1/ipam/handles/h1 does not decode as IPAMHandle") {
		t.Errorf("dry run's warnings: %s", errOut.String())
	}
	if kvs, _, _ := stores[storeKubernetes].List(ctx, "/"); len(kvs) != 0 {
		t.Fatalf("the dry run wrote %d records", len(kvs))
	}

	out.Reset()
	if err := datastoreCmd(ctx, args, "json", &out, &errOut); err != nil {
		t.Fatal(err)
	}
	var rep migrate.Report
	if err := json.Unmarshal([]byte(out.String()), &rep); err != nil || rep.Total().Created != 2 || rep.DryRun {
		t.Fatalf("report %+v %v:\n%s", rep, err, out.String())
	}
	if kvs, _, _ := stores[storeKubernetes].List(ctx, "/"); len(kvs) != 2 {
		t.Fatalf("copied %d records, want 2", len(kvs))
	}

	put(stores[storeKubernetes], pool, `{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"pods"},"spec":{"cidr":"10.245.0.0/16"}}`)
	err := datastoreCmd(ctx, args, "table", &out, &errOut)
	if !errors.Is(err, migrate.ErrDiffers) || !strings.Contains(err.Error(), "--overwrite replaces them") {
		t.Fatalf("differing destination: %v", err)
	}
	if err := datastoreCmd(ctx, append(args, "--overwrite"), "table", &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if kv, _ := stores[storeKubernetes].Get(ctx, pool); !strings.Contains(string(kv.Value), "10.244.0.0/16") {
		t.Fatalf("not overwritten: %s", kv.Value)
	}
	if err := datastoreCmd(ctx, []string{"copy"}, "table", &out, &errOut); err == nil || !strings.Contains(err.Error(), "usage: tortiectl datastore migrate") {
		t.Fatalf("datastore copy: %v", err)
	}
}
