-- Messages of every rail join the one queue again (the rail column is dropped).

CREATE INDEX `idx_consumer_messages_fetch` ON `consumer_messages`(`available_after`,`created_at`,`id`);

DROP INDEX IF EXISTS `idx_consumer_messages_rail_fetch`;

ALTER TABLE `poisoned_messages` DROP COLUMN `rail`;

ALTER TABLE `consumer_messages` DROP COLUMN `rail`;
