# Vault Agent sidecar: logs in with the pod's service account and keeps the token in a
# file the exporter watches. The exporter renews the token and exports its state; the
# agent re-authenticates when the token dies, and the exporter picks the new one up
# within seconds.
exit_after_auth = false
pid_file = "/home/vault/agent.pid"

vault {
  address = "https://vault.vault.svc:8200"
}

auto_auth {
  method "kubernetes" {
    mount_path = "auth/kubernetes"
    config = {
      role = "vault-token-exporter"
    }
  }

  sink "file" {
    config = {
      path = "/vault/token/token"
      # Group-readable: the exporter runs as another user in the pod's fsGroup.
      mode = 0640
    }
  }
}
