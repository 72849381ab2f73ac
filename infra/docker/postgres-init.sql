-- The schema registry's own database beside Herald's (the embedded default creates it the same way).
CREATE DATABASE herald_registry;
