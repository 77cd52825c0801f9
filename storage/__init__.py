"""Roost's storage: the SQLite schema and its migrations, and small repositories returning plain records.

    database.py       open_database(), the shared connection, transaction() / read()
    migrations.py     the schema's history (PRAGMA user_version)
    secrets.py        generated secrets, hashes, the key file and SecretBox
    records.py        the frozen records repositories return
    users.py, instances.py, projects.py, devices.py, topics.py, api_keys.py, messages.py, quota.py
                      one repository per table
    auth_snapshot.py  everything the broker's auth needs, read in one go
    store.py          all of the above assembled for the composition root
"""
