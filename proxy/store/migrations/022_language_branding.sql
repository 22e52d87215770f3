-- The language of statements, their e-mails and invoices: Dutch (nl) or English (en). A partner
-- has one (Dutch unless it chooses English); a customer may choose their own, and without one
-- (NULL) gets their partner's. The rest of a partner's white label (sender, statement texts,
-- whether payouts name the partner) is kept in `partners.branding` (006) by its field names.
ALTER TABLE partners
    ADD COLUMN language text NOT NULL DEFAULT 'nl' CONSTRAINT partners_language CHECK (language IN ('nl', 'en'));
ALTER TABLE customers
    ADD COLUMN language text CONSTRAINT customers_language CHECK (language IN ('nl', 'en'));
