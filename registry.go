package asyncmonolith

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
)

// registry holds the consumers of one plugin. It is read on every Produce and every
// processed message, by every processor at once, and written only by Register: readers load
// an immutable snapshot (no lock, no shared counter to bounce between cores), writers
// replace it.
type registry struct {
	mu    sync.Mutex // serializes writers
	snap  atomic.Pointer[registrySnapshot]
	names sync.Map // reflect.Type → stored payload type name, for Produce
}

// registrySnapshot is one immutable state of the registry.
type registrySnapshot struct {
	byConsumer  map[string]*registration
	byPayload   map[string][]*registration // sorted by consumerType, so fan-out order is stable
	payloadGoOf map[string]reflect.Type
}

// payloadName is payloadTypeName, cached per Go type (Produce calls it per payload).
func (r *registry) payloadName(t reflect.Type) (string, error) {
	if v, ok := r.names.Load(t); ok {
		return v.(string), nil
	}
	name, err := payloadTypeName(t)
	if err != nil {
		return "", err
	}
	r.names.Store(t, name)
	return name, nil
}

func newRegistry() *registry {
	r := &registry{}
	r.snap.Store(&registrySnapshot{
		byConsumer:  map[string]*registration{},
		byPayload:   map[string][]*registration{},
		payloadGoOf: map[string]reflect.Type{},
	})
	return r
}

func (r *registry) add(reg *registration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.snap.Load()
	if _, ok := old.byConsumer[reg.consumerType]; ok {
		return fmt.Errorf("%w: %q", ErrDuplicateConsumer, reg.consumerType)
	}
	if t, ok := old.payloadGoOf[reg.payloadType]; ok && derefType(t) != derefType(reg.payloadGo) {
		return fmt.Errorf("%w: payload type %q is already the name of %s, not %s", ErrInvalidName, reg.payloadType, t, reg.payloadGo)
	}
	next := &registrySnapshot{
		byConsumer:  maps.Clone(old.byConsumer),
		byPayload:   maps.Clone(old.byPayload),
		payloadGoOf: maps.Clone(old.payloadGoOf),
	}
	next.byConsumer[reg.consumerType] = reg
	next.payloadGoOf[reg.payloadType] = reg.payloadGo
	regs := append(slices.Clone(old.byPayload[reg.payloadType]), reg)
	sort.Slice(regs, func(i, j int) bool { return regs[i].consumerType < regs[j].consumerType })
	next.byPayload[reg.payloadType] = regs
	r.snap.Store(next)
	return nil
}

func (r *registry) consumer(name string) (*registration, bool) {
	reg, ok := r.snap.Load().byConsumer[name]
	return reg, ok
}

// consumersOf returns the consumers of a payload type name (shared slice: do not modify).
func (r *registry) consumersOf(payloadType string) []*registration {
	return r.snap.Load().byPayload[payloadType]
}
