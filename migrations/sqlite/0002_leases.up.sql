-- Leases: a claimed message is marked running (pending = NULL) instead of being held in an
-- open transaction, and the insert id is unique among pending messages only, so a message
-- produced while its twin runs is kept. Every database treats NULLs as distinct in a unique
-- index. A CHECK refuses pending = false, which would escape deduplication.

ALTER TABLE `consumer_messages` ADD COLUMN `pending` numeric CONSTRAINT `chk_consumer_messages_pending` CHECK (pending IS NULL OR pending) DEFAULT true;

DROP INDEX IF EXISTS `ux_consumer_messages_insert_id_consumer_type`;

CREATE UNIQUE INDEX `ux_consumer_messages_pending_insert_id` ON `consumer_messages`(`insert_id`,`consumer_type`,`pending`);
