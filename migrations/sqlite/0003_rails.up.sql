-- Rails: each message names the rail whose processors fetch it ('' is the default rail,
-- which rows written before this version join). The fetch index leads with the rail, so a
-- rail's fetch reads its own range of it; it replaces idx_consumer_messages_fetch.
-- Poisoned messages keep their rail, for requeueing. (DEFAULT "" is the empty string, as
-- GORM's AutoMigrate writes it.)

ALTER TABLE `consumer_messages` ADD COLUMN `rail` text NOT NULL DEFAULT "";

ALTER TABLE `poisoned_messages` ADD COLUMN `rail` text NOT NULL DEFAULT "";

CREATE INDEX `idx_consumer_messages_rail_fetch` ON `consumer_messages`(`rail`,`available_after`,`created_at`,`id`);

DROP INDEX IF EXISTS `idx_consumer_messages_fetch`;
