terraform {
  required_version = ">= 1.5"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.50"
    }
    google-beta = {
      source  = "hashicorp/google-beta"
      version = "~> 6.50"
    }
  }

  # Remote state in a versioned GCS bucket you create once by hand:
  #   terraform init -backend-config="bucket=YOUR_STATE_BUCKET"
  backend "gcs" {
    prefix = "paystream/prod"
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}

provider "google-beta" {
  project = var.project_id
  region  = var.region
}
