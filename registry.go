package asyncmonolith

import (
	"fmt"
	"reflect"
	"sort"
	"sync"
)

// registry holds the consumers of one plugin. It is read on every Produce and every
// processed message, and written by Register.
type registry struct {
	mu          sync.RWMutex
	byConsumer  map[string]*registration
	byPayload   map[string][]*registration // sorted by consumerType, so fan-out order is stable
	payloadGoOf map[string]reflect.Type
	names       sync.Map // reflect.Type → stored payload type name, for Produce
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
	return &registry{
		byConsumer:  map[string]*registration{},
		byPayload:   map[string][]*registration{},
		payloadGoOf: map[string]reflect.Type{},
	}
}

func (r *registry) add(reg *registration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.byConsumer[reg.consumerType]; ok {
		return fmt.Errorf("%w: %q", ErrDuplicateConsumer, reg.consumerType)
	}
	if t, ok := r.payloadGoOf[reg.payloadType]; ok && t != reg.payloadGo {
		return fmt.Errorf("%w: payload type %q is already the name of %s, not %s", ErrInvalidName, reg.payloadType, t, reg.payloadGo)
	}
	r.byConsumer[reg.consumerType] = reg
	r.payloadGoOf[reg.payloadType] = reg.payloadGo
	regs := append(r.byPayload[reg.payloadType], reg)
	sort.Slice(regs, func(i, j int) bool { return regs[i].consumerType < regs[j].consumerType })
	r.byPayload[reg.payloadType] = regs
	return nil
}

func (r *registry) consumer(name string) (*registration, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	reg, ok := r.byConsumer[name]
	return reg, ok
}

// consumersOf returns the consumers of a payload type name (shared slice: do not modify).
func (r *registry) consumersOf(payloadType string) []*registration {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.byPayload[payloadType]
}
