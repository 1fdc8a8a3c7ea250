package asyncmonolith

import (
	"context"
	"sync"
)

// startSchedulers starts the scheduled-message processors.
func (p *Plugin) startSchedulers(fetchCtx, workCtx context.Context, wg *sync.WaitGroup) {}

// checkScheduleConcurrency refuses concurrent scheduled-message processors without row locks.
func (p *Plugin) checkScheduleConcurrency() error { return nil }
