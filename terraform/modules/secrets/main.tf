# Secrets are created empty: no google_secret_manager_secret_version here, so no secret value is
# ever in Terraform code, plan or state. terraform/README.md shows how to add the versions.
resource "google_secret_manager_secret" "this" {
  for_each = tomap(var.secret_ids)

  project             = var.project_id
  secret_id           = each.value
  deletion_protection = var.deletion_protection
  labels              = merge(var.labels, { purpose = replace(each.key, "_", "-") })

  replication {
    dynamic "auto" {
      for_each = length(var.replica_locations) == 0 ? [1] : []
      content {
        dynamic "customer_managed_encryption" {
          for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
          content {
            kms_key_name = customer_managed_encryption.value
          }
        }
      }
    }

    dynamic "user_managed" {
      for_each = length(var.replica_locations) == 0 ? [] : [1]
      content {
        dynamic "replicas" {
          for_each = var.replica_locations
          content {
            location = replicas.value
          }
        }
      }
    }
  }
}
