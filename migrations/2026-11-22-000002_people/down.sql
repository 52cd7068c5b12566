DROP TABLE consents;
DROP TABLE customers;
DROP TABLE staff_users;
