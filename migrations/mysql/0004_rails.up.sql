-- Rails: each message names the rail whose processors fetch it ('' is the default rail,
-- which rows written before this version join). The fetch index leads with the rail, so a
-- rail's fetch reads its own range of it; it replaces idx_consumer_messages_fetch.
-- Poisoned messages keep their rail, for requeueing. Rail names are lowercase ASCII, so
-- the default collation compares them exactly.

ALTER TABLE `consumer_messages` ADD COLUMN `rail` varchar(64) NOT NULL DEFAULT '', ADD INDEX `idx_consumer_messages_rail_fetch` (`rail`,`available_after`,`created_at`,`id`), DROP INDEX `idx_consumer_messages_fetch`;

ALTER TABLE `poisoned_messages` ADD COLUMN `rail` varchar(64) NOT NULL DEFAULT '';
