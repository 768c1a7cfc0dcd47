package lab

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// startEtcdCluster runs n etcd members in the fabric namespace, on the
// first subnet's router address, and waits until the cluster is healthy.
func (l *Lab) startEtcdCluster(n int) error {
	if _, err := exec.LookPath("etcd"); err != nil {
		return errors.New("etcd not installed (Debian package etcd-server)")
	}
	var initial []string
	for i := 1; i <= n; i++ {
		m := &EtcdMember{Name: fmt.Sprintf("m%d", i),
			ClientURL: fmt.Sprintf("%s://10.0.1.254:%d", l.etcdScheme(), 2379+i*10000), PeerURL: fmt.Sprintf("%s://10.0.1.254:%d", l.etcdScheme(), 2380+i*10000)}
		l.Etcd = append(l.Etcd, m)
		initial = append(initial, m.Name+"="+m.PeerURL)
	}
	for _, m := range l.Etcd {
		if err := l.startMember(m, strings.Join(initial, ",")); err != nil {
			return err
		}
	}
	l.EtcdURL = l.Etcd[0].ClientURL
	for _, m := range l.Etcd {
		if err := l.waitMember(m, 30*time.Second); err != nil {
			return err
		}
	}
	return l.save()
}

func (l *Lab) startMember(m *EtcdMember, initial string) error {
	dir := filepath.Join(Dir(l.Name), "etcd-"+m.Name)
	state := "new"
	if _, err := os.Stat(dir); err == nil {
		state = "existing"
	}
	logf, err := os.OpenFile(dir+".log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	args := []string{"netns", "exec", l.Fabric, "etcd", "--name", m.Name, "--data-dir", dir,
		"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
		"--listen-peer-urls", m.PeerURL, "--initial-advertise-peer-urls", m.PeerURL,
		"--initial-cluster", initial, "--initial-cluster-state", state, "--initial-cluster-token", "tortie-lab-" + l.Name,
		// What the README asks of an external cluster.
		"--auto-compaction-mode", "periodic", "--auto-compaction-retention", "1h"}
	if l.EtcdTLS {
		f := l.etcdFiles(etcdMemberCert)
		args = append(args, "--cert-file", f.Cert, "--key-file", f.Key, "--trusted-ca-file", f.CA, "--client-cert-auth",
			"--peer-cert-file", f.Cert, "--peer-key-file", f.Key, "--peer-trusted-ca-file", f.CA, "--peer-client-cert-auth")
	}
	cmd := exec.Command("ip", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("etcd %s: %w", m.Name, err)
	}
	m.PID = cmd.Process.Pid
	go func() { _ = cmd.Wait() }()
	return nil
}

// waitMember polls the member's health endpoint from inside the fabric.
func (l *Lab) waitMember(m *EtcdMember, timeout time.Duration) error {
	hc, err := l.etcdHTTPClient(2 * time.Second)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for {
		resp, err := hc.Get(m.ClientURL + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcd member %s not healthy after %v: %v", m.Name, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitEtcd waits until member i reports healthy (it has a leader).
func (l *Lab) WaitEtcd(i int, timeout time.Duration) error { return l.waitMember(l.Etcd[i], timeout) }

// StopEtcd kills one member (as a lost machine would go).
func (l *Lab) StopEtcd(i int) error {
	m := l.Etcd[i]
	if err := syscall.Kill(m.PID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	for syscall.Kill(m.PID, 0) == nil {
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// StartEtcd starts a stopped member again with its data and waits for it.
func (l *Lab) StartEtcd(i int) error {
	var initial []string
	for _, m := range l.Etcd {
		initial = append(initial, m.Name+"="+m.PeerURL)
	}
	if err := l.startMember(l.Etcd[i], strings.Join(initial, ",")); err != nil {
		return err
	}
	return l.save()
}
