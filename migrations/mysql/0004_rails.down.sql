-- Messages of every rail join the one queue again (the rail column is dropped).

ALTER TABLE `poisoned_messages` DROP COLUMN `rail`;

ALTER TABLE `consumer_messages` ADD INDEX `idx_consumer_messages_fetch` (`available_after`,`created_at`,`id`), DROP INDEX `idx_consumer_messages_rail_fetch`, DROP COLUMN `rail`;
