-- contact-sync store: the links whose create is in flight (`creating`) found without
-- reading every link of the provider. Every listing and every recovery asks for them;
-- without this index each asked read all of a provider's links (100k rows at 100k people).
CREATE INDEX links_creating ON links(provider_id) WHERE state = 'creating';
