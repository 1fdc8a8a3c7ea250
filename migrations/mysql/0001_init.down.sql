-- Removes the asyncmonolith schema.

DROP TABLE IF EXISTS `scheduled_messages`;
DROP TABLE IF EXISTS `poisoned_messages`;
DROP TABLE IF EXISTS `consumer_messages`;
