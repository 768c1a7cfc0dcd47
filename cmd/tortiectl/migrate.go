package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/tortie-net/tortie/datastore"
	"github.com/tortie-net/tortie/datastore/migrate"
	"github.com/tortie-net/tortie/datastore/open"
)

// Datastore types as the migration's --from and --to name them.
const (
	storeEtcd       = "etcd"
	storeKubernetes = "kubernetes"
)

// storeFlags say how to reach each datastore.
type storeFlags struct {
	etcdEndpoints []string
	etcdTLS       datastore.ClientTLS
	kubeconfig    string
}

// migrateArgs is a parsed `datastore migrate` command line.
type migrateArgs struct {
	from, to  string
	stores    storeFlags
	overwrite bool
	dryRun    bool
}

// parseMigrate reads `datastore migrate`'s flags; kubeconfig defaults to
// the KUBECONFIG environment variable, as kubectl's does.
func parseMigrate(args []string, getenv func(string) string) (migrateArgs, error) {
	var m migrateArgs
	fs := flag.NewFlagSet("datastore migrate", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&m.from, "from", "", "the datastore to copy from: etcd or kubernetes")
	fs.StringVar(&m.to, "to", "", "the datastore to copy to: kubernetes or etcd")
	endpoints := fs.String("etcd-endpoints", "", "etcd's client URLs, comma-separated")
	fs.StringVar(&m.stores.etcdTLS.CAFile, "etcd-ca-cert-file", "", "the CA of etcd's members")
	fs.StringVar(&m.stores.etcdTLS.CertFile, "etcd-cert-file", "", "client certificate for etcd")
	fs.StringVar(&m.stores.etcdTLS.KeyFile, "etcd-key-file", "", "client key for etcd")
	fs.StringVar(&m.stores.kubeconfig, "kubeconfig", getenv("KUBECONFIG"), "kubeconfig of the API server")
	fs.BoolVar(&m.overwrite, "overwrite", false, "replace destination records that differ")
	fs.BoolVar(&m.dryRun, "dry-run", false, "print what would be copied, write nothing")
	if err := fs.Parse(args); err != nil {
		return m, err
	}
	if fs.NArg() > 0 {
		return m, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, t := range []*string{&m.from, &m.to} {
		switch *t {
		case storeEtcd, "etcdv3":
			*t = storeEtcd
		case storeKubernetes:
		case "":
			return m, errors.New("--from and --to are required (etcd or kubernetes)")
		default:
			return m, fmt.Errorf("datastore %q: want etcd or kubernetes", *t)
		}
	}
	if m.from == m.to {
		return m, fmt.Errorf("--from and --to are both %s: a migration goes from one kind of datastore to the other", m.from)
	}
	for _, ep := range strings.Split(*endpoints, ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			m.stores.etcdEndpoints = append(m.stores.etcdEndpoints, ep)
		}
	}
	if len(m.stores.etcdEndpoints) == 0 {
		return m, errors.New("--etcd-endpoints is required: the etcd side of the migration")
	}
	if t := m.stores.etcdTLS; (t.CertFile == "") != (t.KeyFile == "") {
		return m, errors.New("--etcd-cert-file and --etcd-key-file go together")
	}
	return m, nil
}

// openStore connects to the datastore of one side; a variable so that
// tests run the command on stores of their own.
var openStore = func(kind string, f storeFlags) (datastore.Store, error) {
	if kind == storeKubernetes {
		return open.Kubernetes(f.kubeconfig, "tortiectl")
	}
	return datastore.DialEtcd(datastore.EtcdConfig{Endpoints: f.etcdEndpoints, TLS: f.etcdTLS, Timeout: 10 * time.Second})
}

// datastoreCmd runs `tortiectl datastore migrate ...`.
func datastoreCmd(ctx context.Context, args []string, output string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "migrate" {
		return errors.New("usage: tortiectl datastore migrate --from etcd|kubernetes --to kubernetes|etcd [flags]")
	}
	m, err := parseMigrate(args[1:], os.Getenv)
	if err != nil {
		return fmt.Errorf("datastore migrate: %w", err)
	}
	from, err := openStore(m.from, m.stores)
	if err != nil {
		return fmt.Errorf("opening the source (%s): %w", m.from, err)
	}
	defer from.Close()
	to, err := openStore(m.to, m.stores)
	if err != nil {
		return fmt.Errorf("opening the destination (%s): %w", m.to, err)
	}
	defer to.Close()
	rep, err := migrate.Copy(ctx, from, to, migrate.Options{Overwrite: m.overwrite, DryRun: m.dryRun})
	if output == "json" {
		e := json.NewEncoder(stdout)
		e.SetIndent("", "  ")
		if jerr := e.Encode(rep); jerr != nil {
			return jerr
		}
	} else {
		printReport(stdout, m, rep)
	}
	for _, r := range rep.Invalid {
		fmt.Fprintf(stderr, "warning: %s does not decode as %s (%s); copied as it is\n", r.Key, dash(r.Kind), r.Error)
	}
	if len(rep.Extra) > 0 {
		fmt.Fprintf(stderr, "warning: the destination holds %d record(s) the source does not; left in place: %s\n",
			len(rep.Extra), strings.Join(rep.Extra, ", "))
	}
	if len(rep.SourceChanged) > 0 {
		fmt.Fprintf(stderr, "warning: %d record(s) changed in the source during the copy (is a tortied still running?): %s\n"+
			"stop every tortied and migrate again with --overwrite\n", len(rep.SourceChanged), strings.Join(rep.SourceChanged, ", "))
	}
	if errors.Is(err, migrate.ErrDiffers) {
		return fmt.Errorf("%w\n(--overwrite replaces them with the source's; --dry-run shows what would change)", err)
	}
	return err
}

// printReport shows the counts per directory.
func printReport(out io.Writer, m migrateArgs, rep migrate.Report) {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	verb := "copied"
	if rep.DryRun {
		verb = "would copy"
	}
	fmt.Fprintf(tw, "%s -> %s (%s)\n\n", m.from, m.to, verb)
	fmt.Fprintln(tw, "DIRECTORY\tRECORDS\tCREATED\tUPDATED\tUNCHANGED\tINVALID\tFAILED")
	for _, d := range append(rep.Dirs, rep.Total()) {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\n", d.Dir, d.Records, d.Created, d.Updated, d.Unchanged, d.Invalid, d.Failed)
	}
	if len(rep.Differing) > 0 {
		fmt.Fprintf(tw, "\ndiffering in the destination: %s\n", strings.Join(rep.Differing, ", "))
	}
}
