package natsrelay

import "github.com/nats-io/nuid"

// Received is a row of natsrelay_inbox: the id of a message an inbox took in, kept for
// InboxConfig.DedupRetention so that its redeliveries and republishes are dropped.
type Received struct {
	ID         string `gorm:"column:id;primaryKey;size:255"`
	ReceivedAt int64  `gorm:"column:received_at;not null;index:idx_natsrelay_inbox_received_at"`
}

// TableName is natsrelay_inbox.
func (Received) TableName() string { return "natsrelay_inbox" }

func nuidNext() string { return nuid.Next() }
