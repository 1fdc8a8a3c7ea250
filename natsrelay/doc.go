// Package natsrelay carries asyncmonolith messages from one service's database to
// another's through NATS JetStream, exactly once in effect.
//
// Relay out: Forward registers a consumer for a payload type that publishes each message
// to a JetStream subject and completes it only once JetStream acknowledged it. The
// message id travels in Nats-Msg-Id, so JetStream's duplicate window drops a republish
// (after a crash between the ack and the delete). The consumers of one batch run
// concurrently, so their publishes share one asynchronous pipeline and each run waits
// only for its own ack: a batch costs about one round trip, not one per message.
//
// Take in: an Inbox is a durable pull consumer that writes each fetched message into the
// receiver's database with asyncmonolith.Produce, in one transaction per fetch, together
// with a row in the natsrelay_inbox table keyed by the message id: a redelivery (an ack
// lost after the commit) or a republish finds its key there and is dropped. It acks only
// after the transaction committed. The receiver's typed consumers then run as usual.
//
//	nc, _ := nats.Connect(nats.DefaultURL)
//	relay, _ := natsrelay.NewRelay(nc, natsrelay.RelayConfig{})
//	_ = natsrelay.Forward[OrderCancelled](plugin, relay) // subject asyncmonolith.OrderCancelled
//	defer relay.Close()                                   // after the plugin stopped
//
//	in, _ := natsrelay.NewInbox(ctx, receiverDB, nc, natsrelay.InboxConfig{Stream: "ORDERS", Durable: "shipping"})
//	_ = natsrelay.Accept[OrderCancelled](in)
//	_ = in.Start(ctx)
//
// It lives in its own module so that the core does not depend on NATS.
package natsrelay
