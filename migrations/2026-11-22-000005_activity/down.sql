DROP TABLE audit_logs;
DROP TABLE wa_sessions;
DROP TABLE events;
