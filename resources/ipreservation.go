package resources

import (
	"context"
	"fmt"
	"net/netip"
)

// KindIPReservation is Calico's IPReservation.
const KindIPReservation = "IPReservation"

// IPReservation holds addresses IPAM never hands out automatically. As in
// Calico, a reservation only stops new assignments: addresses already
// handed out stay with their owners.
type IPReservation struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   Meta              `json:"metadata"`
	Spec       IPReservationSpec `json:"spec"`
}

// IPReservationSpec lists the reserved addresses and CIDRs.
type IPReservationSpec struct {
	// ReservedCIDRs are CIDRs or single addresses, IPv4 or IPv6, kept as
	// written (a CIDR's host bits are ignored, as in Calico).
	ReservedCIDRs []string `json:"reservedCIDRs,omitempty" check:"cidr"`
}

// Validate checks an IPReservation.
func (r *IPReservation) Validate() error {
	var errs []error
	if err := checkResourceName(r.Metadata.Name); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, checkFields(&r.Spec, "spec")...)
	return wrap(KindIPReservation, r.Metadata.Name, errs)
}

// Prefixes returns the reserved ranges, masked, IPv4 and IPv6 (valid
// after Validate).
func (r *IPReservation) Prefixes() []netip.Prefix {
	out := make([]netip.Prefix, 0, len(r.Spec.ReservedCIDRs))
	for _, s := range r.Spec.ReservedCIDRs {
		if p, err := parseCIDROrIP(s); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}

// notActedOnValues: tortie's IPAM hands out IPv4 addresses only, so IPv6
// reservations have nothing to hold back yet.
func (r *IPReservation) notActedOnValues() []string {
	for _, p := range r.Prefixes() {
		if p.Addr().Is6() {
			return []string{"spec.reservedCIDRs IPv6"}
		}
	}
	return nil
}

func (r *IPReservation) key() string { return Prefix + "ipreservations/" + r.Metadata.Name }
func (r *IPReservation) setVersion() {
	r.APIVersion, r.Kind = CalicoAPIVersion, KindIPReservation
}

// IPReservations lists every IPReservation.
func (c Client) IPReservations(ctx context.Context) ([]*IPReservation, error) {
	out, _, err := list[IPReservation](ctx, c, KindIPReservation)
	return out, err
}

// Reserved returns every reserved range of the stored IPReservations.
func (c Client) Reserved(ctx context.Context) ([]netip.Prefix, error) {
	rs, err := c.IPReservations(ctx)
	if err != nil {
		return nil, fmt.Errorf("IP reservations: %w", err)
	}
	var out []netip.Prefix
	for _, r := range rs {
		out = append(out, r.Prefixes()...)
	}
	return out, nil
}
