"""What jobs cost: the ledger of charges (`ledger`), the budgets checked before a job is
accepted (`budgets`) and the reports over the ledger (`reports`). Prices themselves
are the catalog's (`shared.providers.pricing`)."""
