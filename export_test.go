package asyncmonolith

// TxSlotWaiters reports how many Message.Tx begins wait for a slot (Config.MaxMessageTxs):
// the package's external tests wait for it before they advance the clock to time them out.
func TxSlotWaiters(p *Plugin) int32 { return p.txConns.waiting.Load() }

// PreparingInserts reports how many insert statements are being prepared in the background
// (preparedInsert): such a prepare waits in the pool like any other caller, so a test that
// counts the pool's waits waits for none to be left first.
func PreparingInserts(p *Plugin) int {
	st := p.stmts
	st.preparedMu.Lock()
	defer st.preparedMu.Unlock()
	n := 0
	for _, stmt := range st.prepared {
		if stmt == nil {
			n++
		}
	}
	return n
}
