package asyncmonolith

// TxSlotWaiters reports how many Message.Tx begins wait for a slot (Config.MaxMessageTxs):
// the package's external tests wait for it before they advance the clock to time them out.
func TxSlotWaiters(p *Plugin) int32 { return p.txConns.waiting.Load() }
