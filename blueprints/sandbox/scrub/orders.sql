-- Special users (staff, support, service logins) never log in to a clone; idempotent,
-- since a retried stage runs it again.
UPDATE customers SET active = false WHERE is_staff AND active;
